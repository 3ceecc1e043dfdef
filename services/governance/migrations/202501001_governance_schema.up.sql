-- Governance's own records: how data is classified, how long it is kept, and the history
-- of quality and retention runs (after the seed's "Data Governance & Security").
CREATE SCHEMA IF NOT EXISTS governance;

CREATE TABLE governance.data_classes (
    name                VARCHAR(20) PRIMARY KEY
                        CHECK (name IN ('public', 'internal', 'confidential', 'restricted')),
    access_level        VARCHAR(20) NOT NULL,
    encryption_required BOOLEAN NOT NULL,
    retention           TEXT NOT NULL,
    backup_frequency    VARCHAR(20) NOT NULL
);

INSERT INTO governance.data_classes VALUES
    ('public',       'Public',       false, 'Indefinite',                 'Daily'),
    ('internal',     'Internal',     true,  '7 years',                    'Daily'),
    ('confidential', 'Confidential', true,  '3 years after last activity', 'Real-time'),
    ('restricted',   'Restricted',   true,  'As required by law',          'Real-time');

CREATE TABLE governance.field_classifications (
    field_path  VARCHAR(200) PRIMARY KEY,
    data_class  VARCHAR(20) NOT NULL REFERENCES governance.data_classes(name),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE governance.retention_policies (
    data_type      VARCHAR(50) PRIMARY KEY,
    retention_days INTEGER NOT NULL CHECK (retention_days > 0),
    action         VARCHAR(20) NOT NULL CHECK (action IN ('delete', 'archive', 'anonymize'))
);

INSERT INTO governance.retention_policies VALUES
    ('cart_data',      90,   'delete'),
    ('session_data',   30,   'delete'),
    ('analytics_raw',  365,  'archive'),
    ('user_activity',  1095, 'anonymize'),
    ('order_data',     2555, 'archive');

CREATE TABLE governance.retention_runs (
    id             BIGSERIAL PRIMARY KEY,
    data_type      VARCHAR(50) NOT NULL REFERENCES governance.retention_policies(data_type),
    cutoff         TIMESTAMPTZ NOT NULL,
    affected_count BIGINT NOT NULL,
    dry_run        BOOLEAN NOT NULL,
    ran_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE governance.quality_reports (
    id            BIGSERIAL PRIMARY KEY,
    overall_score NUMERIC(5,2) NOT NULL,
    report        JSONB NOT NULL,
    ran_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_quality_reports_ran_at ON governance.quality_reports (ran_at);
