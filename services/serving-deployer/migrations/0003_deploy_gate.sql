-- The deploy gate (issue 13): the trust verdicts the scanner published, the rules that
-- say whether a policy covers a repository, and the violations recorded on deployments.

-- The latest `image.policy_evaluated` per digest. `violated_since` is the stream sequence
-- at which the digest turned fail/audit from pass (or from no verdict); NULL while it passes.
CREATE TABLE policy_verdicts (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reasons JSONB NOT NULL DEFAULT '[]',
    findings JSONB NOT NULL DEFAULT '[]',
    policy TEXT,
    violated_since BIGINT,
    last_sequence BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, repository, digest)
);

CREATE INDEX policy_verdicts_violated ON policy_verdicts (violated_since)
    WHERE violated_since IS NOT NULL;

-- Each registry's repository rules as last set (the `rule.set` event), for the policy mode.
CREATE TABLE rules (
    registry_id UUID NOT NULL,
    rule_id TEXT NOT NULL,
    rule JSONB NOT NULL,
    PRIMARY KEY (registry_id, rule_id)
);

-- `deployment.policy_violated`, one row per event.
CREATE TABLE deployment_violations (
    deployment_id UUID NOT NULL,
    sequence BIGINT NOT NULL,
    digest TEXT NOT NULL,
    stage TEXT NOT NULL,
    reasons JSONB NOT NULL DEFAULT '[]',
    findings JSONB NOT NULL DEFAULT '[]',
    policy TEXT,
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (deployment_id, sequence)
);

-- The sequence of a deployment's latest `deployment.requested`: a verdict that turns after
-- it is news to a running deployment; one before it was checked at deploy time.
ALTER TABLE deployments ADD COLUMN requested_sequence BIGINT NOT NULL DEFAULT 0;
UPDATE deployments d SET requested_sequence = COALESCE((
    SELECT max((h->>'sequence')::bigint) FROM jsonb_array_elements(d.history) h
    WHERE h->>'state' = 'requested'), 0);

CREATE INDEX deployments_digest ON deployments (registry_id, repository, digest);
