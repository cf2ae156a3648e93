-- PinpointCare v1: the schema of ONE tenant database (MySQL 5.x / MariaDB).
--
-- The PHP app gives every customer a database of its own; this file creates
-- the tables in whatever database is current (no CREATE DATABASE, no USE):
--
--     mariadb pinpoint_alpha < connectors/pinpoint/v1-schema.sql
--
-- It is written the way the PHP app left it, on purpose: INT UNSIGNED
-- AUTO_INCREMENT ids, TINYINT(1) flags, local wall-clock DATETIMEs (the
-- facility's zone, America/Chicago), zero dates as "unknown", codes as CHAR /
-- ENUM / small integers, settings as PHP serialize() output in TEXT, no
-- foreign-key constraints (the app joined by convention), one older table in
-- latin1, and an audit table without a primary key.

CREATE TABLE IF NOT EXISTS facilities (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(120) NOT NULL,
    code VARCHAR(16) NULL,
    timezone VARCHAR(40) NOT NULL DEFAULT 'America/Chicago',
    phone VARCHAR(32) NULL,
    address_line1 VARCHAR(120) NULL,
    city VARCHAR(80) NULL,
    state CHAR(2) NULL,
    zip VARCHAR(10) NULL,
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Clinicians and staff. The oldest table: still latin1 (cp1252 in MySQL terms).
CREATE TABLE IF NOT EXISTS users (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    facility_id INT UNSIGNED NULL,
    username VARCHAR(60) NOT NULL,
    password_hash VARCHAR(255) NOT NULL DEFAULT '',
    email VARCHAR(190) NULL,
    first_name VARCHAR(60) NOT NULL DEFAULT '',
    last_name VARCHAR(60) NOT NULL DEFAULT '',
    -- RN nurse, LP licensed practical nurse, MD physician, SW social worker,
    -- CM care manager, AD administrator
    role CHAR(2) NOT NULL DEFAULT 'RN',
    credentials VARCHAR(32) NULL,
    npi VARCHAR(10) NULL,
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    last_login_at DATETIME NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username),
    KEY idx_users_facility (facility_id)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

CREATE TABLE IF NOT EXISTS patients (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    facility_id INT UNSIGNED NOT NULL,
    primary_clinician_id INT UNSIGNED NULL,
    mrn VARCHAR(32) NULL,
    first_name VARCHAR(60) NOT NULL DEFAULT '',
    middle_name VARCHAR(60) NULL,
    last_name VARCHAR(60) NOT NULL DEFAULT '',
    preferred_name VARCHAR(60) NULL,
    dob DATE NOT NULL DEFAULT '0000-00-00',
    -- M, F, O (other), U (unknown), or '' (never asked)
    gender CHAR(1) NOT NULL DEFAULT '',
    phone VARCHAR(32) NULL,
    email VARCHAR(190) NULL,
    address_line1 VARCHAR(120) NULL,
    city VARCHAR(80) NULL,
    state CHAR(2) NULL,
    zip VARCHAR(10) NULL,
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    deleted TINYINT(1) NOT NULL DEFAULT 0,
    -- PHP serialize() of the portal preferences array
    prefs TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id),
    KEY idx_patients_facility (facility_id),
    KEY idx_patients_name (last_name, first_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS patient_contacts (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    patient_id INT UNSIGNED NOT NULL,
    -- 1 emergency, 2 guardian, 3 caregiver, 4 other
    contact_type TINYINT UNSIGNED NOT NULL DEFAULT 1,
    relationship VARCHAR(40) NULL,
    name VARCHAR(120) NOT NULL DEFAULT '',
    phone VARCHAR(32) NULL,
    email VARCHAR(190) NULL,
    is_primary TINYINT(1) NOT NULL DEFAULT 0,
    notes TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    PRIMARY KEY (id),
    KEY idx_patient_contacts_patient (patient_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS care_plans (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    patient_id INT UNSIGNED NOT NULL,
    created_by_id INT UNSIGNED NOT NULL,
    title VARCHAR(200) NOT NULL DEFAULT '',
    status ENUM('draft','active','completed','discontinued') NOT NULL DEFAULT 'draft',
    start_date DATE NOT NULL DEFAULT '0000-00-00',
    end_date DATE NOT NULL DEFAULT '0000-00-00',
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id),
    KEY idx_care_plans_patient (patient_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS care_plan_goals (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    care_plan_id INT UNSIGNED NOT NULL,
    description TEXT NOT NULL,
    target_date DATE NOT NULL DEFAULT '0000-00-00',
    -- O open, M met, N not met, X cancelled
    status CHAR(1) NOT NULL DEFAULT 'O',
    sort_order SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    PRIMARY KEY (id),
    KEY idx_care_plan_goals_plan (care_plan_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS care_plan_interventions (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    care_plan_id INT UNSIGNED NOT NULL,
    -- NULL: an intervention of the plan as a whole, not of one goal
    goal_id INT UNSIGNED NULL,
    assigned_to_id INT UNSIGNED NULL,
    description TEXT NOT NULL,
    frequency VARCHAR(60) NULL,
    is_completed TINYINT(1) NOT NULL DEFAULT 0,
    completed_at DATETIME NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    PRIMARY KEY (id),
    KEY idx_care_plan_interventions_plan (care_plan_id),
    KEY idx_care_plan_interventions_goal (goal_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Assessment and survey templates (PHQ-9, fall risk, satisfaction surveys...).
CREATE TABLE IF NOT EXISTS survey_templates (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    name VARCHAR(150) NOT NULL,
    code VARCHAR(32) NULL,
    version SMALLINT UNSIGNED NOT NULL DEFAULT 1,
    -- A clinical assessment, S survey
    kind CHAR(1) NOT NULL DEFAULT 'A',
    is_active TINYINT(1) NOT NULL DEFAULT 1,
    -- PHP serialize() of the scoring bands
    scoring TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS survey_questions (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    template_id INT UNSIGNED NOT NULL,
    position SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    question_text TEXT NOT NULL,
    answer_type VARCHAR(16) NOT NULL DEFAULT 'text',
    -- PHP serialize() of the choices (value => label), NULL for free text
    options TEXT NULL,
    max_score DECIMAL(6,2) NULL,
    is_required TINYINT(1) NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    KEY idx_survey_questions_template (template_id, position)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One filled-in template: an assessment of a patient by a clinician.
CREATE TABLE IF NOT EXISTS assessments (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    patient_id INT UNSIGNED NOT NULL,
    template_id INT UNSIGNED NOT NULL,
    clinician_id INT UNSIGNED NOT NULL,
    -- 0 = not reviewed yet (the app's way of saying NULL)
    reviewed_by INT UNSIGNED NOT NULL DEFAULT 0,
    -- P in progress, C completed, X cancelled
    status CHAR(1) NOT NULL DEFAULT 'P',
    started_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    completed_at DATETIME NULL,
    total_score DECIMAL(7,2) NULL,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id),
    KEY idx_assessments_patient (patient_id),
    KEY idx_assessments_template (template_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS assessment_answers (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    assessment_id INT UNSIGNED NOT NULL,
    question_id INT UNSIGNED NOT NULL,
    answer_text TEXT NULL,
    score DECIMAL(6,2) NULL,
    answered_at DATETIME NULL,
    PRIMARY KEY (id),
    KEY idx_assessment_answers_assessment (assessment_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS notes (
    id INT UNSIGNED NOT NULL AUTO_INCREMENT,
    patient_id INT UNSIGNED NOT NULL,
    author_id INT UNSIGNED NOT NULL,
    assessment_id INT UNSIGNED NULL,
    -- GEN general, CLN clinical, SOC social, ADM administrative
    category CHAR(3) NOT NULL DEFAULT 'GEN',
    subject VARCHAR(200) NULL,
    body LONGTEXT NOT NULL,
    is_private TINYINT(1) NOT NULL DEFAULT 0,
    created_at DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
    updated_at DATETIME NULL,
    PRIMARY KEY (id),
    KEY idx_notes_patient (patient_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Append-only audit trail written by the PHP app. No primary key (never
-- needed one); cdc-bridge keys its changes by the whole row. Not mapped to v2.
CREATE TABLE IF NOT EXISTS audit_log (
    logged_at DATETIME NOT NULL,
    user_id INT UNSIGNED NULL,
    action VARCHAR(32) NOT NULL,
    table_name VARCHAR(64) NOT NULL,
    row_id INT UNSIGNED NULL,
    ip VARCHAR(45) NULL,
    details TEXT NULL,
    KEY idx_audit_log_row (table_name, row_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
