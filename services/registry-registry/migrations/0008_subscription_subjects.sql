-- The delivery queue per subject (issue 14): one row per subscription and CloudEvent
-- subject with events waiting, naming the oldest of them (`head_sequence`) and when it may
-- be sent (`next_attempt_at`: due, in backoff after a failure, or leased while a dispatcher
-- sends it). A dispatcher takes due rows in one indexed step, so its cost does not grow
-- with the number of events waiting behind them, and never two events of one subject at
-- once. The outbox keeps the events themselves.
CREATE TABLE subscription_subjects (
    subscription_id UUID NOT NULL,
    subject TEXT NOT NULL,
    head_sequence BIGINT NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (subscription_id, subject)
);

CREATE INDEX subscription_subjects_due ON subscription_subjects (subscription_id, next_attempt_at);

-- Leases now live on the subject rows.
ALTER TABLE subscription_outbox DROP COLUMN leased_until;
ALTER TABLE subscription_outbox DROP COLUMN next_attempt_at;

-- Rows queued before this migration get their subject rows.
INSERT INTO subscription_subjects (subscription_id, subject, head_sequence, next_attempt_at)
SELECT subscription_id, subject, min(sequence), now()
FROM subscription_outbox GROUP BY subscription_id, subject;
