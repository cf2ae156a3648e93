-- PinpointCare v2 on PostgreSQL: the same tables, columns, keys and foreign
-- keys as v2-sqlserver.sql (the Entity Framework model), in schema v2, with
-- double-quoted PascalCase names. Types: UNIQUEIDENTIFIER -> uuid,
-- NVARCHAR(n) -> varchar(n), NVARCHAR(MAX) -> text, BIT -> boolean,
-- DATETIMEOFFSET(7) -> timestamptz(6), DECIMAL(p,s) -> numeric(p,s),
-- INT -> integer, VARBINARY(MAX) / BINARY(32) -> bytea, DATE -> date.
-- tests/pinpoint_example.rs checks that the two files agree.
--
--     psql -v ON_ERROR_STOP=1 -f connectors/pinpoint/v2-postgres.sql
--
-- Foreign keys are DEFERRABLE INITIALLY DEFERRED: the sink applies one batch
-- in one transaction, table by table in name order, so a child
-- (AssessmentAnswers) is written before its parent (Assessments) of the same
-- batch; the constraint is checked at commit, when both are there. That covers
-- a v1 transaction (never split across batches), NOT the initial snapshot,
-- which arrives table by table in name order over many batches: drop the
-- foreign keys for the initial sync and add them back once caught up
-- (README.md, "Foreign keys", has the SQL).
--
-- As in SQL Server, no foreign key points at Patients: soft-deleted v1
-- patients are left out of v2 while their children still arrive (README.md,
-- "Foreign keys").

CREATE SCHEMA IF NOT EXISTS v2;

CREATE TABLE IF NOT EXISTS v2."Facilities" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "Name" varchar(120) NOT NULL,
    "Code" varchar(16) NULL,
    "TimeZoneId" varchar(40) NOT NULL,
    "Phone" varchar(32) NULL,
    "AddressLine1" varchar(120) NULL,
    "City" varchar(80) NULL,
    "State" varchar(2) NULL,
    "PostalCode" varchar(10) NULL,
    "IsActive" boolean NOT NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_Facilities" PRIMARY KEY ("Id")
);

CREATE TABLE IF NOT EXISTS v2."Clinicians" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "FacilityId" uuid NULL,
    "UserName" varchar(60) NOT NULL,
    "Email" varchar(190) NULL,
    "FirstName" varchar(60) NULL,
    "LastName" varchar(60) NULL,
    "Role" varchar(32) NOT NULL,
    "Credentials" varchar(32) NULL,
    "Npi" varchar(10) NULL,
    "IsActive" boolean NOT NULL,
    "LastLoginAtUtc" timestamptz(6) NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_Clinicians" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Clinicians_Facilities_FacilityId" FOREIGN KEY ("FacilityId") REFERENCES v2."Facilities" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."Patients" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "FacilityId" uuid NOT NULL,
    "PrimaryClinicianId" uuid NULL,
    "MedicalRecordNumber" varchar(32) NULL,
    "FirstName" varchar(60) NULL,
    "MiddleName" varchar(60) NULL,
    "LastName" varchar(60) NULL,
    "PreferredName" varchar(60) NULL,
    "DateOfBirth" date NULL,
    "Gender" varchar(16) NOT NULL,
    "Phone" varchar(32) NULL,
    "Email" varchar(190) NULL,
    "AddressLine1" varchar(120) NULL,
    "City" varchar(80) NULL,
    "State" varchar(2) NULL,
    "PostalCode" varchar(10) NULL,
    "IsActive" boolean NOT NULL,
    "PreferencesJson" text NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_Patients" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Patients_Facilities_FacilityId" FOREIGN KEY ("FacilityId") REFERENCES v2."Facilities" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_Patients_Clinicians_PrimaryClinicianId" FOREIGN KEY ("PrimaryClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."PatientContacts" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "PatientId" uuid NOT NULL,
    "ContactType" varchar(32) NOT NULL,
    "Relationship" varchar(40) NULL,
    "FullName" varchar(120) NULL,
    "Phone" varchar(32) NULL,
    "Email" varchar(190) NULL,
    "IsPrimary" boolean NOT NULL,
    "Notes" text NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_PatientContacts" PRIMARY KEY ("Id")
);

CREATE TABLE IF NOT EXISTS v2."CarePlans" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "PatientId" uuid NOT NULL,
    "CreatedByClinicianId" uuid NOT NULL,
    "Title" varchar(200) NOT NULL,
    "Status" varchar(16) NOT NULL,
    "StartDate" date NULL,
    "EndDate" date NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_CarePlans" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_CarePlans_Clinicians_CreatedByClinicianId" FOREIGN KEY ("CreatedByClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."CarePlanGoals" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "CarePlanId" uuid NOT NULL,
    "Description" text NOT NULL,
    "TargetDate" date NULL,
    "Status" varchar(16) NOT NULL,
    "SortOrder" integer NOT NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_CarePlanGoals" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_CarePlanGoals_CarePlans_CarePlanId" FOREIGN KEY ("CarePlanId") REFERENCES v2."CarePlans" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."CarePlanInterventions" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "CarePlanId" uuid NOT NULL,
    "CarePlanGoalId" uuid NULL,
    "AssignedClinicianId" uuid NULL,
    "Description" text NOT NULL,
    "Frequency" varchar(60) NULL,
    "IsCompleted" boolean NOT NULL,
    "CompletedAtUtc" timestamptz(6) NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_CarePlanInterventions" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_CarePlanInterventions_CarePlans_CarePlanId" FOREIGN KEY ("CarePlanId") REFERENCES v2."CarePlans" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_CarePlanInterventions_CarePlanGoals_CarePlanGoalId" FOREIGN KEY ("CarePlanGoalId") REFERENCES v2."CarePlanGoals" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_CarePlanInterventions_Clinicians_AssignedClinicianId" FOREIGN KEY ("AssignedClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."AssessmentTemplates" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "Name" varchar(150) NOT NULL,
    "Code" varchar(32) NULL,
    "Version" integer NOT NULL,
    "Kind" varchar(16) NOT NULL,
    "IsActive" boolean NOT NULL,
    "ScoringJson" text NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_AssessmentTemplates" PRIMARY KEY ("Id")
);

CREATE TABLE IF NOT EXISTS v2."AssessmentQuestions" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "AssessmentTemplateId" uuid NOT NULL,
    "Position" integer NOT NULL,
    "Text" text NOT NULL,
    "AnswerType" varchar(16) NOT NULL,
    "OptionsJson" text NULL,
    "MaxScore" numeric(9,2) NULL,
    "IsRequired" boolean NOT NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_AssessmentQuestions" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_AssessmentQuestions_AssessmentTemplates_AssessmentTemplateId" FOREIGN KEY ("AssessmentTemplateId") REFERENCES v2."AssessmentTemplates" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."Assessments" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "PatientId" uuid NOT NULL,
    "AssessmentTemplateId" uuid NOT NULL,
    "ClinicianId" uuid NOT NULL,
    "ReviewedByClinicianId" uuid NULL,
    "Status" varchar(16) NOT NULL,
    "StartedAtUtc" timestamptz(6) NULL,
    "CompletedAtUtc" timestamptz(6) NULL,
    "TotalScore" numeric(9,2) NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_Assessments" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Assessments_AssessmentTemplates_AssessmentTemplateId" FOREIGN KEY ("AssessmentTemplateId") REFERENCES v2."AssessmentTemplates" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_Assessments_Clinicians_ClinicianId" FOREIGN KEY ("ClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_Assessments_Clinicians_ReviewedByClinicianId" FOREIGN KEY ("ReviewedByClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."AssessmentAnswers" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "AssessmentId" uuid NOT NULL,
    "AssessmentQuestionId" uuid NOT NULL,
    "AnswerText" text NULL,
    "Score" numeric(9,2) NULL,
    "AnsweredAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_AssessmentAnswers" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_AssessmentAnswers_Assessments_AssessmentId" FOREIGN KEY ("AssessmentId") REFERENCES v2."Assessments" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_AssessmentAnswers_AssessmentQuestions_AssessmentQuestionId" FOREIGN KEY ("AssessmentQuestionId") REFERENCES v2."AssessmentQuestions" ("Id") DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE IF NOT EXISTS v2."Notes" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "PatientId" uuid NOT NULL,
    "AuthorClinicianId" uuid NOT NULL,
    "AssessmentId" uuid NULL,
    "Category" varchar(32) NOT NULL,
    "Subject" varchar(200) NULL,
    "Body" text NOT NULL,
    "IsPrivate" boolean NOT NULL,
    "CreatedAtUtc" timestamptz(6) NULL,
    "UpdatedAtUtc" timestamptz(6) NULL,
    "LegacyV1Key" varchar(64) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_Notes" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Notes_Clinicians_AuthorClinicianId" FOREIGN KEY ("AuthorClinicianId") REFERENCES v2."Clinicians" ("Id") DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT "FK_Notes_Assessments_AssessmentId" FOREIGN KEY ("AssessmentId") REFERENCES v2."Assessments" ("Id") DEFERRABLE INITIALLY DEFERRED
);

-- Rendered documents (PDF) regenerated from v1 data by the documents feature,
-- not by the mapping. Content is the rendered file, ContentSha256 its digest.
CREATE TABLE IF NOT EXISTS v2."LegacyDocuments" (
    "Id" uuid NOT NULL,
    "TenantId" varchar(64) NOT NULL,
    "DocumentKind" varchar(32) NOT NULL,
    "SourceKey" varchar(64) NOT NULL,
    "PatientId" uuid NULL,
    "Content" bytea NOT NULL,
    "ContentSha256" bytea NOT NULL,
    "ContentType" varchar(64) NOT NULL,
    "SourceChangedAtUtc" timestamptz(6) NULL,
    "RenderedAtUtc" timestamptz(6) NOT NULL,
    "RenderedBytes" integer NOT NULL,
    "PageCount" integer NULL,
    "RendererVersion" varchar(32) NULL,
    "IsLegacy" boolean NOT NULL DEFAULT true,
    "LegacySource" varchar(16) NULL,
    CONSTRAINT "PK_LegacyDocuments" PRIMARY KEY ("Id")
);

CREATE INDEX IF NOT EXISTS "IX_Clinicians_FacilityId" ON v2."Clinicians" ("FacilityId");
CREATE INDEX IF NOT EXISTS "IX_Patients_FacilityId" ON v2."Patients" ("FacilityId");
CREATE INDEX IF NOT EXISTS "IX_Patients_PrimaryClinicianId" ON v2."Patients" ("PrimaryClinicianId");
CREATE INDEX IF NOT EXISTS "IX_Patients_TenantId_LastName" ON v2."Patients" ("TenantId", "LastName");
CREATE INDEX IF NOT EXISTS "IX_PatientContacts_PatientId" ON v2."PatientContacts" ("PatientId");
CREATE INDEX IF NOT EXISTS "IX_CarePlans_PatientId" ON v2."CarePlans" ("PatientId");
CREATE INDEX IF NOT EXISTS "IX_CarePlans_CreatedByClinicianId" ON v2."CarePlans" ("CreatedByClinicianId");
CREATE INDEX IF NOT EXISTS "IX_CarePlanGoals_CarePlanId" ON v2."CarePlanGoals" ("CarePlanId");
CREATE INDEX IF NOT EXISTS "IX_CarePlanInterventions_CarePlanId" ON v2."CarePlanInterventions" ("CarePlanId");
CREATE INDEX IF NOT EXISTS "IX_CarePlanInterventions_CarePlanGoalId" ON v2."CarePlanInterventions" ("CarePlanGoalId");
CREATE INDEX IF NOT EXISTS "IX_CarePlanInterventions_AssignedClinicianId" ON v2."CarePlanInterventions" ("AssignedClinicianId");
CREATE INDEX IF NOT EXISTS "IX_AssessmentQuestions_AssessmentTemplateId" ON v2."AssessmentQuestions" ("AssessmentTemplateId");
CREATE INDEX IF NOT EXISTS "IX_Assessments_PatientId" ON v2."Assessments" ("PatientId");
CREATE INDEX IF NOT EXISTS "IX_Assessments_AssessmentTemplateId" ON v2."Assessments" ("AssessmentTemplateId");
CREATE INDEX IF NOT EXISTS "IX_Assessments_ClinicianId" ON v2."Assessments" ("ClinicianId");
CREATE INDEX IF NOT EXISTS "IX_Assessments_ReviewedByClinicianId" ON v2."Assessments" ("ReviewedByClinicianId");
CREATE INDEX IF NOT EXISTS "IX_AssessmentAnswers_AssessmentId" ON v2."AssessmentAnswers" ("AssessmentId");
CREATE INDEX IF NOT EXISTS "IX_AssessmentAnswers_AssessmentQuestionId" ON v2."AssessmentAnswers" ("AssessmentQuestionId");
CREATE INDEX IF NOT EXISTS "IX_Notes_PatientId" ON v2."Notes" ("PatientId");
CREATE INDEX IF NOT EXISTS "IX_Notes_AuthorClinicianId" ON v2."Notes" ("AuthorClinicianId");
CREATE INDEX IF NOT EXISTS "IX_Notes_AssessmentId" ON v2."Notes" ("AssessmentId");
CREATE UNIQUE INDEX IF NOT EXISTS "IX_LegacyDocuments_TenantId_DocumentKind_SourceKey" ON v2."LegacyDocuments" ("TenantId", "DocumentKind", "SourceKey");
