-- PinpointCare v2 on SQL Server: the tables the .NET app's Entity Framework
-- code-first model creates, in schema dbo of the one multi-tenant database.
--
-- Conventions (EF's): PascalCase plural tables; `Id UNIQUEIDENTIFIER` keys
-- (PK_<Table>); foreign keys `<Name>Id` (FK_<Table>_<Principal>_<Column>) with
-- an index each (IX_<Table>_<Column>); `TenantId` names the customer (the v1
-- database name unless source.tenants.ids says otherwise, so NVARCHAR, not
-- UNIQUEIDENTIFIER); instants as DATETIMEOFFSET(7) in UTC (`...AtUtc`).
-- Rows migrated from v1 carry LegacyV1Key / IsLegacy / LegacySource.
--
-- Foreign keys from a table to Patients are NOT declared: the mapping leaves
-- soft-deleted v1 patients out of v2 while their contacts, plans, assessments
-- and notes still arrive, so such a constraint would reject them.
--
-- SQL Server cannot defer a constraint to commit time, and the sink writes a
-- batch table by table in name order (AssessmentAnswers before Assessments):
-- while cdc-bridge writes, the declared constraints are disabled
-- (NOCHECK) and checked again at cutover. README.md, "Foreign keys", has the SQL.
--
-- Plain statements separated by `;` (no GO, no transaction), parents first.

CREATE TABLE [dbo].[Facilities] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [Name] NVARCHAR(120) NOT NULL,
    [Code] NVARCHAR(16) NULL,
    [TimeZoneId] NVARCHAR(40) NOT NULL,
    [Phone] NVARCHAR(32) NULL,
    [AddressLine1] NVARCHAR(120) NULL,
    [City] NVARCHAR(80) NULL,
    [State] NVARCHAR(2) NULL,
    [PostalCode] NVARCHAR(10) NULL,
    [IsActive] BIT NOT NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_Facilities] PRIMARY KEY ([Id])
);

CREATE TABLE [dbo].[Clinicians] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [FacilityId] UNIQUEIDENTIFIER NULL,
    [UserName] NVARCHAR(60) NOT NULL,
    [Email] NVARCHAR(190) NULL,
    [FirstName] NVARCHAR(60) NULL,
    [LastName] NVARCHAR(60) NULL,
    [Role] NVARCHAR(32) NOT NULL,
    [Credentials] NVARCHAR(32) NULL,
    [Npi] NVARCHAR(10) NULL,
    [IsActive] BIT NOT NULL,
    [LastLoginAtUtc] DATETIMEOFFSET(7) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_Clinicians] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_Clinicians_Facilities_FacilityId] FOREIGN KEY ([FacilityId]) REFERENCES [dbo].[Facilities] ([Id])
);

CREATE TABLE [dbo].[Patients] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [FacilityId] UNIQUEIDENTIFIER NOT NULL,
    [PrimaryClinicianId] UNIQUEIDENTIFIER NULL,
    [MedicalRecordNumber] NVARCHAR(32) NULL,
    [FirstName] NVARCHAR(60) NULL,
    [MiddleName] NVARCHAR(60) NULL,
    [LastName] NVARCHAR(60) NULL,
    [PreferredName] NVARCHAR(60) NULL,
    [DateOfBirth] DATE NULL,
    [Gender] NVARCHAR(16) NOT NULL,
    [Phone] NVARCHAR(32) NULL,
    [Email] NVARCHAR(190) NULL,
    [AddressLine1] NVARCHAR(120) NULL,
    [City] NVARCHAR(80) NULL,
    [State] NVARCHAR(2) NULL,
    [PostalCode] NVARCHAR(10) NULL,
    [IsActive] BIT NOT NULL,
    [PreferencesJson] NVARCHAR(MAX) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_Patients] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_Patients_Facilities_FacilityId] FOREIGN KEY ([FacilityId]) REFERENCES [dbo].[Facilities] ([Id]),
    CONSTRAINT [FK_Patients_Clinicians_PrimaryClinicianId] FOREIGN KEY ([PrimaryClinicianId]) REFERENCES [dbo].[Clinicians] ([Id])
);

CREATE TABLE [dbo].[PatientContacts] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [PatientId] UNIQUEIDENTIFIER NOT NULL,
    [ContactType] NVARCHAR(32) NOT NULL,
    [Relationship] NVARCHAR(40) NULL,
    [FullName] NVARCHAR(120) NULL,
    [Phone] NVARCHAR(32) NULL,
    [Email] NVARCHAR(190) NULL,
    [IsPrimary] BIT NOT NULL,
    [Notes] NVARCHAR(MAX) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_PatientContacts] PRIMARY KEY ([Id])
);

CREATE TABLE [dbo].[CarePlans] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [PatientId] UNIQUEIDENTIFIER NOT NULL,
    [CreatedByClinicianId] UNIQUEIDENTIFIER NOT NULL,
    [Title] NVARCHAR(200) NOT NULL,
    [Status] NVARCHAR(16) NOT NULL,
    [StartDate] DATE NULL,
    [EndDate] DATE NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_CarePlans] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_CarePlans_Clinicians_CreatedByClinicianId] FOREIGN KEY ([CreatedByClinicianId]) REFERENCES [dbo].[Clinicians] ([Id])
);

CREATE TABLE [dbo].[CarePlanGoals] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [CarePlanId] UNIQUEIDENTIFIER NOT NULL,
    [Description] NVARCHAR(MAX) NOT NULL,
    [TargetDate] DATE NULL,
    [Status] NVARCHAR(16) NOT NULL,
    [SortOrder] INT NOT NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_CarePlanGoals] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_CarePlanGoals_CarePlans_CarePlanId] FOREIGN KEY ([CarePlanId]) REFERENCES [dbo].[CarePlans] ([Id])
);

CREATE TABLE [dbo].[CarePlanInterventions] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [CarePlanId] UNIQUEIDENTIFIER NOT NULL,
    [CarePlanGoalId] UNIQUEIDENTIFIER NULL,
    [AssignedClinicianId] UNIQUEIDENTIFIER NULL,
    [Description] NVARCHAR(MAX) NOT NULL,
    [Frequency] NVARCHAR(60) NULL,
    [IsCompleted] BIT NOT NULL,
    [CompletedAtUtc] DATETIMEOFFSET(7) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_CarePlanInterventions] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_CarePlanInterventions_CarePlans_CarePlanId] FOREIGN KEY ([CarePlanId]) REFERENCES [dbo].[CarePlans] ([Id]),
    CONSTRAINT [FK_CarePlanInterventions_CarePlanGoals_CarePlanGoalId] FOREIGN KEY ([CarePlanGoalId]) REFERENCES [dbo].[CarePlanGoals] ([Id]),
    CONSTRAINT [FK_CarePlanInterventions_Clinicians_AssignedClinicianId] FOREIGN KEY ([AssignedClinicianId]) REFERENCES [dbo].[Clinicians] ([Id])
);

CREATE TABLE [dbo].[AssessmentTemplates] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [Name] NVARCHAR(150) NOT NULL,
    [Code] NVARCHAR(32) NULL,
    [Version] INT NOT NULL,
    [Kind] NVARCHAR(16) NOT NULL,
    [IsActive] BIT NOT NULL,
    [ScoringJson] NVARCHAR(MAX) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_AssessmentTemplates] PRIMARY KEY ([Id])
);

CREATE TABLE [dbo].[AssessmentQuestions] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [AssessmentTemplateId] UNIQUEIDENTIFIER NOT NULL,
    [Position] INT NOT NULL,
    [Text] NVARCHAR(MAX) NOT NULL,
    [AnswerType] NVARCHAR(16) NOT NULL,
    [OptionsJson] NVARCHAR(MAX) NULL,
    [MaxScore] DECIMAL(9,2) NULL,
    [IsRequired] BIT NOT NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_AssessmentQuestions] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_AssessmentQuestions_AssessmentTemplates_AssessmentTemplateId] FOREIGN KEY ([AssessmentTemplateId]) REFERENCES [dbo].[AssessmentTemplates] ([Id])
);

CREATE TABLE [dbo].[Assessments] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [PatientId] UNIQUEIDENTIFIER NOT NULL,
    [AssessmentTemplateId] UNIQUEIDENTIFIER NOT NULL,
    [ClinicianId] UNIQUEIDENTIFIER NOT NULL,
    [ReviewedByClinicianId] UNIQUEIDENTIFIER NULL,
    [Status] NVARCHAR(16) NOT NULL,
    [StartedAtUtc] DATETIMEOFFSET(7) NULL,
    [CompletedAtUtc] DATETIMEOFFSET(7) NULL,
    [TotalScore] DECIMAL(9,2) NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_Assessments] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_Assessments_AssessmentTemplates_AssessmentTemplateId] FOREIGN KEY ([AssessmentTemplateId]) REFERENCES [dbo].[AssessmentTemplates] ([Id]),
    CONSTRAINT [FK_Assessments_Clinicians_ClinicianId] FOREIGN KEY ([ClinicianId]) REFERENCES [dbo].[Clinicians] ([Id]),
    CONSTRAINT [FK_Assessments_Clinicians_ReviewedByClinicianId] FOREIGN KEY ([ReviewedByClinicianId]) REFERENCES [dbo].[Clinicians] ([Id])
);

CREATE TABLE [dbo].[AssessmentAnswers] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [AssessmentId] UNIQUEIDENTIFIER NOT NULL,
    [AssessmentQuestionId] UNIQUEIDENTIFIER NOT NULL,
    [AnswerText] NVARCHAR(MAX) NULL,
    [Score] DECIMAL(9,2) NULL,
    [AnsweredAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_AssessmentAnswers] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_AssessmentAnswers_Assessments_AssessmentId] FOREIGN KEY ([AssessmentId]) REFERENCES [dbo].[Assessments] ([Id]),
    CONSTRAINT [FK_AssessmentAnswers_AssessmentQuestions_AssessmentQuestionId] FOREIGN KEY ([AssessmentQuestionId]) REFERENCES [dbo].[AssessmentQuestions] ([Id])
);

CREATE TABLE [dbo].[Notes] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [PatientId] UNIQUEIDENTIFIER NOT NULL,
    [AuthorClinicianId] UNIQUEIDENTIFIER NOT NULL,
    [AssessmentId] UNIQUEIDENTIFIER NULL,
    [Category] NVARCHAR(32) NOT NULL,
    [Subject] NVARCHAR(200) NULL,
    [Body] NVARCHAR(MAX) NOT NULL,
    [IsPrivate] BIT NOT NULL,
    [CreatedAtUtc] DATETIMEOFFSET(7) NULL,
    [UpdatedAtUtc] DATETIMEOFFSET(7) NULL,
    [LegacyV1Key] NVARCHAR(64) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_Notes] PRIMARY KEY ([Id]),
    CONSTRAINT [FK_Notes_Clinicians_AuthorClinicianId] FOREIGN KEY ([AuthorClinicianId]) REFERENCES [dbo].[Clinicians] ([Id]),
    CONSTRAINT [FK_Notes_Assessments_AssessmentId] FOREIGN KEY ([AssessmentId]) REFERENCES [dbo].[Assessments] ([Id])
);

-- Rendered documents (PDF) regenerated from v1 data by the documents feature,
-- not by the mapping. Content is the rendered file, ContentSha256 its digest.
CREATE TABLE [dbo].[LegacyDocuments] (
    [Id] UNIQUEIDENTIFIER NOT NULL,
    [TenantId] NVARCHAR(64) NOT NULL,
    [DocumentKind] NVARCHAR(32) NOT NULL,
    [SourceKey] NVARCHAR(64) NOT NULL,
    [PatientId] UNIQUEIDENTIFIER NULL,
    [Content] VARBINARY(MAX) NOT NULL,
    [ContentSha256] BINARY(32) NOT NULL,
    [ContentType] NVARCHAR(64) NOT NULL,
    [SourceChangedAtUtc] DATETIMEOFFSET(7) NULL,
    [RenderedAtUtc] DATETIMEOFFSET(7) NOT NULL,
    [RenderedBytes] INT NOT NULL,
    [PageCount] INT NULL,
    [RendererVersion] NVARCHAR(32) NULL,
    [IsLegacy] BIT NOT NULL DEFAULT 1,
    [LegacySource] NVARCHAR(16) NULL,
    CONSTRAINT [PK_LegacyDocuments] PRIMARY KEY ([Id])
);

CREATE INDEX [IX_Clinicians_FacilityId] ON [dbo].[Clinicians] ([FacilityId]);
CREATE INDEX [IX_Patients_FacilityId] ON [dbo].[Patients] ([FacilityId]);
CREATE INDEX [IX_Patients_PrimaryClinicianId] ON [dbo].[Patients] ([PrimaryClinicianId]);
CREATE INDEX [IX_Patients_TenantId_LastName] ON [dbo].[Patients] ([TenantId], [LastName]);
CREATE INDEX [IX_PatientContacts_PatientId] ON [dbo].[PatientContacts] ([PatientId]);
CREATE INDEX [IX_CarePlans_PatientId] ON [dbo].[CarePlans] ([PatientId]);
CREATE INDEX [IX_CarePlans_CreatedByClinicianId] ON [dbo].[CarePlans] ([CreatedByClinicianId]);
CREATE INDEX [IX_CarePlanGoals_CarePlanId] ON [dbo].[CarePlanGoals] ([CarePlanId]);
CREATE INDEX [IX_CarePlanInterventions_CarePlanId] ON [dbo].[CarePlanInterventions] ([CarePlanId]);
CREATE INDEX [IX_CarePlanInterventions_CarePlanGoalId] ON [dbo].[CarePlanInterventions] ([CarePlanGoalId]);
CREATE INDEX [IX_CarePlanInterventions_AssignedClinicianId] ON [dbo].[CarePlanInterventions] ([AssignedClinicianId]);
CREATE INDEX [IX_AssessmentQuestions_AssessmentTemplateId] ON [dbo].[AssessmentQuestions] ([AssessmentTemplateId]);
CREATE INDEX [IX_Assessments_PatientId] ON [dbo].[Assessments] ([PatientId]);
CREATE INDEX [IX_Assessments_AssessmentTemplateId] ON [dbo].[Assessments] ([AssessmentTemplateId]);
CREATE INDEX [IX_Assessments_ClinicianId] ON [dbo].[Assessments] ([ClinicianId]);
CREATE INDEX [IX_Assessments_ReviewedByClinicianId] ON [dbo].[Assessments] ([ReviewedByClinicianId]);
CREATE INDEX [IX_AssessmentAnswers_AssessmentId] ON [dbo].[AssessmentAnswers] ([AssessmentId]);
CREATE INDEX [IX_AssessmentAnswers_AssessmentQuestionId] ON [dbo].[AssessmentAnswers] ([AssessmentQuestionId]);
CREATE INDEX [IX_Notes_PatientId] ON [dbo].[Notes] ([PatientId]);
CREATE INDEX [IX_Notes_AuthorClinicianId] ON [dbo].[Notes] ([AuthorClinicianId]);
CREATE INDEX [IX_Notes_AssessmentId] ON [dbo].[Notes] ([AssessmentId]);
CREATE UNIQUE INDEX [IX_LegacyDocuments_TenantId_DocumentKind_SourceKey] ON [dbo].[LegacyDocuments] ([TenantId], [DocumentKind], [SourceKey]);
