//! A rule's trust policy compiled with [`imagelib_trust::policy`] (the team's semantics,
//! implemented once there) and its outcome in the event contract's terms.

use chrono::{DateTime, NaiveDate, Utc};
use imagelib_events::RuleId;
use imagelib_events::model::{PolicyFinding, PolicyMode, PolicyReason, PolicyVerdict, TrustPolicy};
use imagelib_trust::evidence::Evidence;
use imagelib_trust::policy::{self, Evaluation, Policy, PolicySpec};

use super::Roots;

/// A rule's trust policy, ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub rule: RuleId,
    pub mode: PolicyMode,
    pub policy: Policy,
}

impl CompiledPolicy {
    /// `None` (with a warning) for a policy that does not compile: registry-registry
    /// refuses those, so only a hand-made event or agent file can hold one, and no verdict
    /// is better than one from a policy that is not what was written.
    pub fn compile(rule: &RuleId, trust: &TrustPolicy) -> Option<Self> {
        let spec: PolicySpec = match serde_json::to_value(trust).and_then(serde_json::from_value) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(%rule, error = %e, "trust policy not readable; not evaluated");
                return None;
            }
        };
        match Policy::compile(&spec) {
            Ok(policy) => Some(CompiledPolicy {
                rule: rule.clone(),
                mode: trust.mode,
                policy,
            }),
            Err(e) => {
                tracing::warn!(%rule, error = %e, "trust policy does not compile; not evaluated");
                None
            }
        }
    }

    /// Evaluates the policy for `subject` with the evidence of its own referrers and of
    /// each platform manifest's, at `now`.
    pub fn evaluate(
        &self,
        roots: &Roots,
        subject: &str,
        own: &[Evidence],
        children: &[Vec<Evidence>],
        now: DateTime<Utc>,
    ) -> Evaluation {
        let verifier = roots.apply(self.policy.verifier(now));
        let today: NaiveDate = now.date_naive();
        let started = std::time::Instant::now();
        let evaluation = policy::evaluate(&self.policy, &verifier, subject, own, children, today);
        let n = evaluation.signatures.len().max(1) as u32;
        for check in &evaluation.signatures {
            crate::metrics::signature_verified(&check.outcome, started.elapsed() / n);
        }
        evaluation
    }
}

/// The verdict and findings of an evaluation in the event contract's terms.
pub fn outcome(mode: PolicyMode, e: &Evaluation) -> (PolicyVerdict, Vec<PolicyFinding>) {
    let findings: Vec<PolicyFinding> = e
        .findings
        .iter()
        .filter_map(|f| {
            let reason: PolicyReason =
                serde_json::from_value(serde_json::Value::String(f.reason.as_str().into())).ok()?;
            let mut detail = f.detail.clone();
            if detail.len() > PolicyFinding::MAX_DETAIL {
                let mut end = PolicyFinding::MAX_DETAIL;
                while !detail.is_char_boundary(end) {
                    end -= 1;
                }
                detail.truncate(end);
            }
            Some(PolicyFinding { reason, detail })
        })
        .collect();
    let verdict = match (findings.is_empty(), mode) {
        (true, _) => PolicyVerdict::Pass,
        (false, PolicyMode::Enforce) => PolicyVerdict::Fail,
        (false, _) => PolicyVerdict::Audit,
    };
    (verdict, findings)
}
