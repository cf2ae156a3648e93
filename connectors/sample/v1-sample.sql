-- A small v1 sample for the local stack: two tenant databases of a PHP-era care
-- coordination app (the full PinpointCare example and its generator replace this).
-- Loaded by tests/stack/demo.sh as `CREATE DATABASE IF NOT EXISTS` + tables + rows.
CREATE DATABASE IF NOT EXISTS pinpoint_alpha CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS pinpoint_beta CHARACTER SET utf8mb4;

CREATE TABLE IF NOT EXISTS pinpoint_alpha.facilities (
    id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(120) NOT NULL,
    timezone VARCHAR(40) NOT NULL DEFAULT 'America/Chicago'
);
CREATE TABLE IF NOT EXISTS pinpoint_alpha.patients (
    id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    facility_id INT UNSIGNED NOT NULL,
    first_name VARCHAR(60) NOT NULL,
    last_name VARCHAR(60) NOT NULL,
    dob DATE NOT NULL DEFAULT '0000-00-00',
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    flags SET('fall_risk','dnr','allergy') NOT NULL DEFAULT '',
    prefs TEXT,
    created_at DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS pinpoint_alpha.assessment_answers (
    assessment_id INT UNSIGNED NOT NULL,
    question_id INT UNSIGNED NOT NULL,
    answer TEXT,
    score DECIMAL(6,2),
    answered_at DATETIME(6)
);

CREATE TABLE IF NOT EXISTS pinpoint_beta.facilities LIKE pinpoint_alpha.facilities;
CREATE TABLE IF NOT EXISTS pinpoint_beta.patients LIKE pinpoint_alpha.patients;
CREATE TABLE IF NOT EXISTS pinpoint_beta.assessment_answers LIKE pinpoint_alpha.assessment_answers;

INSERT IGNORE INTO pinpoint_alpha.facilities (id, name) VALUES
    (1, 'Riverside Care Home'), (2, 'Maple Grove Clinic');
INSERT IGNORE INTO pinpoint_alpha.patients (id, facility_id, first_name, last_name, dob, is_active, flags, prefs, created_at) VALUES
    (1, 1, 'Zoë', 'Müller', '1941-03-07', 1, 'fall_risk', 'a:1:{s:4:"lang";s:2:"de";}', '2014-06-01 09:30:00'),
    (2, 1, 'José', 'Núñez', '0000-00-00', 1, '', NULL, '2015-01-15 14:00:00'),
    (3, 2, 'Åsa', 'Lindqvist', '1950-11-30', 0, 'dnr,allergy', 'a:0:{}', '2016-09-09 08:05:00');
INSERT INTO pinpoint_alpha.assessment_answers (assessment_id, question_id, answer, score, answered_at)
    SELECT 1, 1, 'Independent', 3.00, '2016-09-10 10:00:00.250000' FROM DUAL
    WHERE NOT EXISTS (SELECT 1 FROM pinpoint_alpha.assessment_answers);
INSERT INTO pinpoint_alpha.assessment_answers (assessment_id, question_id, answer, score, answered_at)
    SELECT 1, 2, 'Needs help 🙂', 1.50, NULL FROM DUAL
    WHERE (SELECT COUNT(*) FROM pinpoint_alpha.assessment_answers) = 1;

INSERT IGNORE INTO pinpoint_beta.facilities (id, name, timezone) VALUES (1, 'Harbor View', 'America/New_York');
INSERT IGNORE INTO pinpoint_beta.patients (id, facility_id, first_name, last_name, dob, is_active, flags, prefs, created_at) VALUES
    (1, 1, 'Chidi', 'Okafor', '1962-02-14', 1, 'allergy', NULL, '2017-03-03 11:11:11');
