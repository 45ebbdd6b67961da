-- Trust (issue 13): what the scanner verified and found about each digest, kept per
-- (repository, digest) so that any tag pointing at it, now or later, shows it. Every row is
-- last-writer-wins by stream sequence (reports: newest `scanned_at`), so a replay gives the
-- same rows whatever the interleaving with tag events.

-- The latest outcome per signature referrer (`source`) and policy rule ('' for none).
CREATE TABLE trust_signatures (
    repo_id UUID NOT NULL,
    digest TEXT NOT NULL,
    source TEXT NOT NULL,
    policy TEXT NOT NULL,
    signer TEXT NOT NULL,
    issuer TEXT,
    kind TEXT NOT NULL,
    verified BOOLEAN NOT NULL,
    reason TEXT,
    at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest, source, policy)
);

-- The newest report per scanner (by `scanned_at`, then stream sequence).
CREATE TABLE trust_reports (
    repo_id UUID NOT NULL,
    digest TEXT NOT NULL,
    scanner TEXT NOT NULL,
    scanner_version TEXT NOT NULL,
    db TEXT NOT NULL,
    scanned_at TIMESTAMPTZ NOT NULL,
    critical BIGINT NOT NULL,
    high BIGINT NOT NULL,
    medium BIGINT NOT NULL,
    low BIGINT NOT NULL,
    unknown BIGINT NOT NULL,
    fixable BIGINT NOT NULL,
    source TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest, scanner)
);

CREATE TABLE trust_sboms (
    repo_id UUID NOT NULL,
    digest TEXT NOT NULL,
    source TEXT NOT NULL,
    format TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest, source)
);

-- The latest policy verdict of a digest.
CREATE TABLE trust_policies (
    repo_id UUID NOT NULL,
    digest TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT[] NOT NULL,
    findings JSONB NOT NULL,
    policy TEXT,
    at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);

-- The referrers of a digest as last listed (a tag event's details or referrers_changed).
CREATE TABLE trust_referrers (
    repo_id UUID NOT NULL,
    digest TEXT NOT NULL,
    referrers JSONB NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);

-- A tag version's trust, composed from the rows above for its digest (signatures, policy)
-- and for its digest and platform manifests (reports, SBOMs): the list filters need it on
-- the row. `max_severity`: NULL without a report, 0 none, 1 low … 4 critical.
ALTER TABLE tag_versions
    ADD COLUMN signed BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN max_severity SMALLINT,
    ADD COLUMN has_sbom BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN policy TEXT,
    ADD COLUMN trust JSONB;

-- Partial: a catalog without trust data pays nothing for them. Name order for keyset pages.
CREATE INDEX tag_versions_signed ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND signed;
CREATE INDEX tag_versions_sbom ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND has_sbom;
CREATE INDEX tag_versions_policy ON tag_versions (policy, repository, tag, registry_id)
    WHERE valid_to IS NULL AND policy IS NOT NULL;
CREATE INDEX tag_versions_severity ON tag_versions (repository, tag, registry_id, max_severity)
    WHERE valid_to IS NULL AND max_severity IS NOT NULL;

-- The latest trust policy violation recorded on a deployment.
ALTER TABLE deployments ADD COLUMN policy_violation JSONB;
