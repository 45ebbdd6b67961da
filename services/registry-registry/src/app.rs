//! The command side: each command is checked against the projected state, becomes events
//! appended with the aggregate's expected sequence, and is applied to the projection
//! before the call returns (read-your-writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imagelib_events::bus::{BusError, EventBus, Expect};
use imagelib_events::event::{
    RegistryCredentialsRotated, RegistryRegistered, RegistryRemoved, RegistryUpdated,
    RegistryValidated, RegistryValidationFailed, RuleRemoved, RuleSet, SyncRequested,
};
use imagelib_events::model::{AuthKind, SealedCredential, SyncReason, ValidationReason};
use imagelib_events::{Envelope, EventPayload, RegistryId, RepositoryName, RuleId, TraceParent};
use imagelib_platform::auth::Caller;
use imagelib_secrets::Vault;
use registry_client::{NetworkGuard, ProviderEndpoints, RegistryUrl};
use secrecy::ExposeSecret;

use crate::domain::credentials::{Credentials, CredentialsExt};
use crate::domain::registry::{
    self as reg, FieldError, RegisterRequest, RotateRequest, UpdateRequest,
};
use crate::store::{Registry, Status, Store, StoreError};
use crate::validate::{self, Failed, Passed};

fn unavailable_detail(id: RegistryId, master_key_id: &str) -> String {
    format!(
        "the registry's data key is wrapped by master key {master_key_id}, which is not in the \
         master key file: restore the file that holds key {master_key_id} and restart, or enter \
         the credentials again (PUT /v1/registries/{id}/credentials)"
    )
}

/// How long the shredder waits before retrying a failed shred: doubling from a second to
/// five minutes.
pub(crate) fn shred_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

/// The AAD field name binding a registry's webhook secret.
const WEBHOOK_FIELD: &str = "webhook_secret";

/// Why a command was refused; mapped once to a problem in `api`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("registry {0} not found")]
    NotFound(RegistryId),
    #[error("rule `{1}` of registry {0} not found")]
    RuleNotFound(RegistryId, String),
    #[error("validation failed ({}): {}", reason_str(.0.reason), .0.detail)]
    Validation(Failed),
    /// A change of where the registry is (or how it is reached) failed validation with
    /// what would be stored: nothing was changed.
    #[error("validation of the change failed ({}): {}", reason_str(.0.reason), .0.detail)]
    ChangeValidation(Failed),
    /// A change that would send the stored credentials somewhere new: `field` needs
    /// `credentials` in the same request.
    #[error(
        "changing `{field}` needs the registry's credentials in the same request \
         (`credentials`): stored credentials never follow a registry to another place"
    )]
    CredentialsRequired { field: &'static str },
    /// The registry's sealed credentials cannot be opened (lost master key).
    #[error("{0}")]
    CredentialsUnavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("secrets: {0}")]
    Secrets(#[from] imagelib_secrets::SecretsError),
    #[error("{0}")]
    Rule(#[from] imagelib_rules::RuleError),
}

pub fn reason_str(r: ValidationReason) -> &'static str {
    match r {
        ValidationReason::Dns => "dns",
        ValidationReason::Tls => "tls",
        ValidationReason::Connect => "connect",
        ValidationReason::Timeout => "timeout",
        ValidationReason::NotARegistry => "not_a_registry",
        ValidationReason::Unauthorized => "unauthorized",
        ValidationReason::Forbidden => "forbidden",
        ValidationReason::RateLimited => "rate_limited",
        ValidationReason::Blocked => "blocked",
        ValidationReason::RealmNotAllowed => "realm_not_allowed",
        ValidationReason::HostNotAllowed => "host_not_allowed",
        ValidationReason::CredentialsUnavailable => "credentials_unavailable",
    }
}

impl From<BusError> for CommandError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Conflict { .. } => CommandError::Conflict(
                "the registry changed since you read it; read it again and retry".into(),
            ),
            other => CommandError::Unavailable(format!("event stream: {other}")),
        }
    }
}

/// The registry-registry's command handlers.
#[derive(Debug, Clone)]
pub struct Registries {
    pub(crate) bus: EventBus,
    pub(crate) store: Store,
    pub(crate) vault: Arc<Vault>,
    pub(crate) guard: NetworkGuard,
    pub(crate) endpoints: ProviderEndpoints,
    pub(crate) validation_timeout: std::time::Duration,
    /// Registries whose data key this process cannot open, with the missing master key id.
    unavailable: Arc<Mutex<HashMap<RegistryId, String>>>,
    /// Wakes the shredder after a removal whose shred failed.
    pub(crate) shred_wake: Arc<tokio::sync::Notify>,
}

/// The outcome of a validation run, as the API reports it.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    pub result: Result<Passed, Failed>,
}

impl Registries {
    pub fn new(
        bus: EventBus,
        store: Store,
        vault: Arc<Vault>,
        guard: NetworkGuard,
        endpoints: ProviderEndpoints,
        validation_timeout: std::time::Duration,
    ) -> Self {
        Registries {
            bus,
            store,
            vault,
            guard,
            endpoints,
            validation_timeout,
            unavailable: Arc::default(),
            shred_wake: Arc::default(),
        }
    }

    fn unavailable(&self) -> std::sync::MutexGuard<'_, HashMap<RegistryId, String>> {
        self.unavailable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows a registry whose credentials this process cannot open as
    /// `credentials_unavailable`, saying which master key is missing and what to do.
    pub fn overlay(&self, r: &mut Registry) {
        if let Some(master_key_id) = self.unavailable().get(&r.id) {
            r.status = Status::CredentialsUnavailable;
            r.status_reason = Some("credentials_unavailable".into());
            r.status_detail = Some(unavailable_detail(r.id, master_key_id));
        }
    }

    /// Registries not removed, as the API shows them.
    pub async fn list(&self) -> Result<Vec<Registry>, CommandError> {
        let mut all = self.store.list().await?;
        for r in &mut all {
            self.overlay(r);
        }
        Ok(all)
    }

    /// Startup: finds the registries whose data key no master key of the keyring opens,
    /// logs each with the missing key and the way out, and shows them as
    /// `credentials_unavailable` (everything else keeps working).
    pub async fn sweep_unavailable(&self) -> Result<usize, CommandError> {
        let mut found = 0;
        for r in self.store.list().await? {
            // Without credentials it scans as before; a failing webhook secret is marked
            // when a notification comes (and recovers the same way).
            if r.credential.is_none() {
                continue;
            }
            match self.vault.check(r.id).await {
                Ok(_) => {
                    self.unavailable().remove(&r.id);
                }
                Err(e) => {
                    self.mark_unavailable(r.id, &e);
                    found += 1;
                }
            }
        }
        Ok(found)
    }

    /// Records (and logs) a data key that cannot be opened; other errors are not ours.
    fn mark_unavailable(&self, id: RegistryId, e: &imagelib_secrets::SecretsError) -> bool {
        let master_key_id = match e {
            imagelib_secrets::SecretsError::UnknownMasterKey(k) => k.clone(),
            imagelib_secrets::SecretsError::Decrypt => "(unknown: the key does not unwrap)".into(),
            _ => return false,
        };
        tracing::error!(
            registry = %id,
            master_key_id,
            "registry credentials unavailable: {}",
            unavailable_detail(id, &master_key_id)
        );
        self.unavailable().insert(id, master_key_id);
        true
    }

    fn secrets_error(&self, id: RegistryId, e: imagelib_secrets::SecretsError) -> CommandError {
        if self.mark_unavailable(id, &e) {
            let detail = self
                .unavailable()
                .get(&id)
                .map(|k| unavailable_detail(id, k))
                .unwrap_or_default();
            CommandError::CredentialsUnavailable(detail)
        } else {
            CommandError::Secrets(e)
        }
    }

    /// Destroys the data keys of removed registries that still have one. Returns how many
    /// are left (failures are logged and retried by the caller).
    pub async fn shred_pending(&self) -> Result<usize, CommandError> {
        let pending = self.store.unshredded().await?;
        let mut left = 0;
        for id in pending {
            match self.vault.shred(id).await {
                Ok(()) => self.store.mark_shredded(id).await?,
                Err(e) => {
                    tracing::warn!(registry = %id, error = %e, "shredding the removed registry's data key failed; retrying");
                    left += 1;
                }
            }
        }
        Ok(left)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn envelope(
        &self,
        caller: &Caller,
        payload: impl Into<EventPayload>,
        tp: Option<TraceParent>,
    ) -> Envelope {
        Envelope::new(crate::NAME, payload)
            .with_actor(caller.subject.clone())
            .with_traceparent(tp)
    }

    /// Append and apply: the caller sees its own write.
    /// Records a validation that passed right after the command it checked, so no other
    /// change of the registry can slip between the two.
    async fn commit_validated(
        &self,
        caller: &Caller,
        id: RegistryId,
        passed: &Passed,
        after: u64,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        let validated = RegistryValidated {
            registry_id: id,
            auth_scheme: passed.auth_scheme.clone(),
            catalog_access: passed.catalog_access,
        };
        self.commit(
            self.envelope(caller, validated, tp),
            Expect::LastSequence(after),
        )
        .await
    }

    async fn commit(&self, env: Envelope, expect: Expect) -> Result<u64, CommandError> {
        let receipt = self.bus.append(&env, expect).await?;
        self.store.apply(receipt.sequence, &env).await?;
        Ok(receipt.sequence)
    }

    /// A registry that exists and is not removed.
    pub async fn live(&self, id: RegistryId) -> Result<Registry, CommandError> {
        match self.store.get(id).await? {
            Some(mut r) if r.removed_at.is_none() => {
                self.overlay(&mut r);
                Ok(r)
            }
            _ => Err(CommandError::NotFound(id)),
        }
    }

    async fn seal(
        &self,
        id: RegistryId,
        creds: &Credentials,
    ) -> Result<Option<SealedCredential>, CommandError> {
        if matches!(creds, Credentials::None) {
            return Ok(None);
        }
        let sealed = self
            .vault
            .seal_for(id, &creds.to_plaintext())
            .await
            .map_err(|e| self.secrets_error(id, e))?;
        Ok(Some(sealed))
    }

    async fn open(&self, r: &Registry) -> Result<Credentials, CommandError> {
        let Some(sealed) = &r.credential else {
            return Ok(Credentials::None);
        };
        let plain = self
            .vault
            .open_for(r.id, sealed)
            .await
            .map_err(|e| self.secrets_error(r.id, e))?;
        Credentials::from_plaintext(plain.expose_secret())
            .map_err(|e| CommandError::Unavailable(e.to_string()))
    }

    pub async fn register(
        &self,
        caller: &Caller,
        req: RegisterRequest,
        tp: Option<TraceParent>,
    ) -> Result<(Registry, Option<ValidationReport>), CommandError> {
        let url = crate::domain::profiles::registration_url(
            req.registry_type,
            req.url.as_deref(),
            req.namespace.as_deref(),
        )?;
        let url = reg::check_url(&url, req.insecure)?;
        let label = match &req.label {
            Some(label) => reg::check_label(label)?,
            None => reg::check_label(&format!(
                "{} ({url})",
                crate::domain::profiles::profile(req.registry_type).label
            ))?,
        };
        let proxy_url = reg::check_proxy_url(req.proxy_url.as_deref())?;
        let no_proxy = reg::check_no_proxy(&req.no_proxy)?;
        if let Some(proxy) = &proxy_url {
            reg::check_proxy_network(proxy, &self.guard).await?;
        }
        let visibility = reg::check_visibility(&req.visibility)?;
        let ca_pem = reg::check_ca(req.ca_pem.as_deref())?;
        let interval = reg::check_interval(req.scan_interval_secs)?;
        let repositories = reg::profile_repositories(
            req.registry_type,
            &url,
            reg::check_repositories(&req.repositories)?,
        );
        let auth_hosts = reg::check_auth_hosts(&req.auth_hosts)?;
        let artifact_registry = reg::check_artifact_registry(
            req.registry_type,
            &url,
            req.artifact_registry.as_deref(),
        )?;
        req.credentials
            .validate(req.registry_type)
            .map_err(|e| reg::field(&e.pointer, e.message))?;

        let report = if req.validate {
            let target = validate::Target {
                url: &url,
                registry_type: req.registry_type,
                ca_pem: ca_pem.as_deref(),
                repositories: &repositories,
                auth_hosts: &auth_hosts,
                proxy_url: proxy_url.as_deref(),
                no_proxy: &no_proxy,
                artifact_registry: artifact_registry.as_deref(),
                timeout: self.validation_timeout,
            };
            let result =
                validate::check(&target, &req.credentials, &self.guard, &self.endpoints).await;
            if let Err(f) = result {
                // Refused: nothing is published, no key is kept.
                return Err(CommandError::Validation(f));
            }
            Some(ValidationReport { result })
        } else {
            None
        };

        let id = RegistryId::new();
        let credential = self.seal(id, &req.credentials).await?;
        let webhook_token = imagelib_secrets::generate_token();
        let webhook_secret = self
            .vault
            .seal_field(id, WEBHOOK_FIELD, webhook_token.expose_secret().as_bytes())
            .await?;
        let registered = RegistryRegistered {
            registry_id: id,
            label,
            url: url.to_string(),
            registry_type: req.registry_type,
            insecure: req.insecure,
            auth_kind: req.credentials.kind(),
            credential,
            visibility,
            ca_pem,
            scan_interval_secs: interval,
            repositories,
            webhook_secret: Some(webhook_secret),
            auth_hosts,
            report_pulls: req.report_pulls,
            proxy_url,
            no_proxy,
            artifact_registry,
        };
        let seq = self
            .commit(self.envelope(caller, registered, tp), Expect::NoEvents)
            .await?;
        if let Some(ValidationReport { result: Ok(p) }) = &report {
            self.commit_validated(caller, id, p, seq, tp).await?;
        }
        let r = self.live(id).await?;
        Ok((r, report))
    }

    pub async fn update(
        &self,
        caller: &Caller,
        id: RegistryId,
        req: UpdateRequest,
        expected: Option<u64>,
        tp: Option<TraceParent>,
    ) -> Result<Registry, CommandError> {
        let current = self.live(id).await?;
        let insecure = req.insecure.unwrap_or(current.insecure);
        let url = match &req.url {
            Some(u) => Some(reg::check_url(u, insecure)?.to_string()),
            None if req.insecure.is_some() => {
                // Re-check the stored URL under the new `insecure`.
                Some(reg::check_url(&current.url, insecure)?.to_string())
            }
            None => None,
        };
        let auth_hosts = req
            .auth_hosts
            .as_deref()
            .map(reg::check_auth_hosts)
            .transpose()?;
        let ca_pem = match &req.ca_pem {
            Some(ca) => Some(reg::check_ca(ca.as_deref())?),
            None => None,
        };
        let proxy_url = match &req.proxy_url {
            Some(proxy) => Some(reg::check_proxy_url(proxy.as_deref())?),
            None => None,
        };
        if let Some(Some(proxy)) = &proxy_url {
            reg::check_proxy_network(proxy, &self.guard).await?;
        }
        let no_proxy = req
            .no_proxy
            .as_deref()
            .map(reg::check_no_proxy)
            .transpose()?;
        let repositories = req
            .repositories
            .as_deref()
            .map(reg::check_repositories)
            .transpose()?;
        let registry_type = req.registry_type.unwrap_or(current.registry_type);
        let artifact_registry = match &req.artifact_registry {
            Some(value) => {
                let url_now = reg::check_url(url.as_deref().unwrap_or(&current.url), insecure)?;
                Some(reg::check_artifact_registry(
                    registry_type,
                    &url_now,
                    value.as_deref(),
                )?)
            }
            None => None,
        };
        if artifact_registry.is_none()
            && (url.is_some() || req.registry_type.is_some())
            && let Some(kept) = &current.artifact_registry
        {
            // The stored repository must still fit the new type and address.
            let url_now = reg::check_url(url.as_deref().unwrap_or(&current.url), insecure)?;
            reg::check_artifact_registry(registry_type, &url_now, Some(kept))?;
        }
        let repositories = match repositories {
            Some(r) => {
                let url_now = reg::check_url(url.as_deref().unwrap_or(&current.url), insecure)?;
                Some(reg::profile_repositories(registry_type, &url_now, r))
            }
            None => None,
        };

        // What would send the stored credentials somewhere they were not given for.
        let moved = [
            ("url", url.as_ref().is_some_and(|u| *u != current.url)),
            ("insecure", insecure != current.insecure),
            ("registry_type", registry_type != current.registry_type),
            (
                "auth_hosts",
                auth_hosts
                    .as_ref()
                    .is_some_and(|h| h.iter().any(|h| !current.auth_hosts.contains(h))),
            ),
            // Over plain HTTP a proxy reads every request, credentials included.
            (
                "proxy_url",
                insecure && proxy_url.as_ref().is_some_and(|p| *p != current.proxy_url),
            ),
        ]
        .into_iter()
        .find_map(|(field, changed)| changed.then_some(field));
        if let Some(creds) = &req.credentials {
            creds
                .validate(registry_type)
                .map_err(|e| reg::field(&e.pointer, e.message))?;
        }
        let credentials = match (&req.credentials, moved) {
            (Some(c), _) => Some(c),
            (None, Some(field)) if current.auth_kind != AuthKind::None => {
                return Err(CommandError::CredentialsRequired { field });
            }
            (None, _) => None,
        };

        // Moves, and new credentials, are validated with what will be stored, before
        // anything is emitted.
        let report = if moved.is_some() || credentials.is_some() {
            let anonymous = Credentials::None;
            let creds = credentials.unwrap_or(&anonymous);
            let url_now = reg::check_url(url.as_deref().unwrap_or(&current.url), insecure)?;
            let repositories_now: Vec<RepositoryName> = match &repositories {
                Some(r) => r.clone(),
                None => current
                    .repositories
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
            };
            let ca_now = match &ca_pem {
                Some(ca) => ca.clone(),
                None => current.ca_pem.clone(),
            };
            let auth_hosts_now = auth_hosts.clone().unwrap_or(current.auth_hosts.clone());
            let proxy_now = proxy_url.clone().unwrap_or(current.proxy_url.clone());
            let no_proxy_now = no_proxy.clone().unwrap_or(current.no_proxy.clone());
            let artifact_registry_now = artifact_registry
                .clone()
                .unwrap_or(current.artifact_registry.clone());
            let target = validate::Target {
                url: &url_now,
                registry_type,
                ca_pem: ca_now.as_deref(),
                repositories: &repositories_now,
                auth_hosts: &auth_hosts_now,
                proxy_url: proxy_now.as_deref(),
                no_proxy: &no_proxy_now,
                artifact_registry: artifact_registry_now.as_deref(),
                timeout: self.validation_timeout,
            };
            let result = validate::check(&target, creds, &self.guard, &self.endpoints).await;
            if let Err(f) = result {
                return Err(CommandError::ChangeValidation(f));
            }
            result.ok()
        } else {
            None
        };
        let (auth_kind, credential) = match credentials {
            Some(c) => (Some(c.kind()), self.seal(id, c).await?),
            None => (None, None),
        };
        let update = RegistryUpdated {
            registry_id: id,
            label: req.label.as_deref().map(reg::check_label).transpose()?,
            url,
            insecure: req.insecure,
            visibility: req
                .visibility
                .as_deref()
                .map(reg::check_visibility)
                .transpose()?,
            ca_pem,
            scan_interval_secs: reg::check_interval(req.scan_interval_secs)?,
            repositories,
            auth_hosts,
            registry_type: req.registry_type,
            report_pulls: req.report_pulls,
            auth_kind,
            credential,
            proxy_url,
            no_proxy,
            artifact_registry,
        };
        let expect = Expect::LastSequence(expected.unwrap_or(current.last_sequence));
        let seq = self
            .commit(self.envelope(caller, update, tp), expect)
            .await?;
        if let Some(p) = report {
            self.commit_validated(caller, id, &p, seq, tp).await?;
        }
        self.live(id).await
    }

    /// Before sealing new credentials: a data key no master key opens is replaced (the
    /// credentials it sealed are lost anyway), so the registry recovers.
    async fn recover_key(&self, id: RegistryId) -> Result<bool, CommandError> {
        let replaced = self.vault.replace_unopenable(id).await?;
        if replaced {
            tracing::warn!(registry = %id, "new data key for a registry whose credentials were unavailable; its webhook secret is new too (GET /v1/registries/{id}/webhook)");
        }
        self.unavailable().remove(&id);
        Ok(replaced)
    }

    pub async fn rotate(
        &self,
        caller: &Caller,
        id: RegistryId,
        req: RotateRequest,
        tp: Option<TraceParent>,
    ) -> Result<(Registry, Option<ValidationReport>), CommandError> {
        let current = self.live(id).await?;
        req.credentials
            .validate(current.registry_type)
            .map_err(|e| reg::field(&e.pointer, e.message))?;
        let report = if req.validate {
            let result = self.check(&current, &req.credentials).await?;
            if let Err(f) = result {
                return Err(CommandError::Validation(f));
            }
            Some(ValidationReport { result })
        } else {
            None
        };
        let replaced = self.recover_key(id).await?;
        let webhook_secret = if replaced {
            let webhook_token = imagelib_secrets::generate_token();
            Some(
                self.vault
                    .seal_field(id, WEBHOOK_FIELD, webhook_token.expose_secret().as_bytes())
                    .await?,
            )
        } else {
            None
        };
        let rotated = RegistryCredentialsRotated {
            registry_id: id,
            auth_kind: req.credentials.kind(),
            credential: self.seal(id, &req.credentials).await?,
            webhook_secret,
        };
        let seq = self
            .commit(
                self.envelope(caller, rotated, tp),
                Expect::LastSequence(current.last_sequence),
            )
            .await?;
        if let Some(ValidationReport { result: Ok(p) }) = &report {
            self.commit_validated(caller, id, p, seq, tp).await?;
        }
        Ok((self.live(id).await?, report))
    }

    async fn check(
        &self,
        r: &Registry,
        creds: &Credentials,
    ) -> Result<Result<Passed, Failed>, CommandError> {
        let url = RegistryUrl::parse(&r.url, r.insecure)
            .map_err(|e| reg::field("/url", e.to_string()))?;
        let repositories: Vec<RepositoryName> = r
            .repositories
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let target = validate::Target {
            url: &url,
            registry_type: r.registry_type,
            ca_pem: r.ca_pem.as_deref(),
            repositories: &repositories,
            auth_hosts: &r.auth_hosts,
            proxy_url: r.proxy_url.as_deref(),
            no_proxy: &r.no_proxy,
            artifact_registry: r.artifact_registry.as_deref(),
            timeout: self.validation_timeout,
        };
        Ok(validate::check(&target, creds, &self.guard, &self.endpoints).await)
    }

    /// Re-check a registry with its stored credentials; the outcome is an event either way.
    pub async fn revalidate(
        &self,
        caller: &Caller,
        id: RegistryId,
        tp: Option<TraceParent>,
    ) -> Result<(Registry, ValidationReport), CommandError> {
        let current = self.live(id).await?;
        let creds = self.open(&current).await?;
        let result = self.check(&current, &creds).await?;
        let payload: EventPayload = match &result {
            Ok(p) => RegistryValidated {
                registry_id: id,
                auth_scheme: p.auth_scheme.clone(),
                catalog_access: p.catalog_access,
            }
            .into(),
            Err(f) => RegistryValidationFailed {
                registry_id: id,
                reason: f.reason,
                detail: f.detail.clone(),
            }
            .into(),
        };
        self.commit(
            self.envelope(caller, payload, tp),
            Expect::LastSequence(current.last_sequence),
        )
        .await?;
        Ok((self.live(id).await?, ValidationReport { result }))
    }

    /// Remove: scanning stops (consumers see `removed`) and the data key is destroyed, so
    /// every sealed credential of this registry in the log is dead.
    pub async fn remove(
        &self,
        caller: &Caller,
        id: RegistryId,
        tp: Option<TraceParent>,
    ) -> Result<(), CommandError> {
        let current = self.live(id).await?;
        self.commit(
            self.envelope(caller, RegistryRemoved { registry_id: id }, tp),
            Expect::LastSequence(current.last_sequence),
        )
        .await?;
        // The registry is gone from here on; its data key is destroyed now, or by the
        // shredder, which retries (also after a restart) until it is.
        match self.vault.shred(id).await {
            Ok(()) => self.store.mark_shredded(id).await?,
            Err(e) => {
                tracing::warn!(registry = %id, error = %e, "shredding the data key failed; the shredder retries");
                self.shred_wake.notify_one();
            }
        }
        Ok(())
    }

    pub async fn request_sync(
        &self,
        caller: &Caller,
        id: RegistryId,
        repository: Option<RepositoryName>,
        reason: SyncReason,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        self.live(id).await?;
        let env = self.envelope(
            caller,
            SyncRequested {
                registry_id: id,
                repository,
                reason,
            },
            tp,
        );
        Ok(self.bus.publish(&env).await?.sequence)
    }

    /// Create or replace a rule. `expected` is the registry's rules version a caller's
    /// `If-Match` was checked against: a change since then is a conflict at the append.
    pub async fn set_rule(
        &self,
        caller: &Caller,
        id: RegistryId,
        mut rule: RuleSet,
        expected: Option<u64>,
        tp: Option<TraceParent>,
    ) -> Result<RuleSet, CommandError> {
        let current = self.live(id).await?;
        let url = RegistryUrl::parse(&current.url, current.insecure).ok();
        reg::profile_rule(current.registry_type, url.as_ref(), &mut rule);
        imagelib_rules::CompiledRule::compile(&rule)?;
        let version = match expected {
            Some(v) => v,
            None => self.store.rules_version(id).await?,
        };
        let expect = if version == 0 {
            Expect::NoEvents
        } else {
            Expect::LastSequence(version)
        };
        self.commit(self.envelope(caller, rule.clone(), tp), expect)
            .await?;
        Ok(rule)
    }

    /// Remove a rule; `expected` as for [`Registries::set_rule`].
    pub async fn remove_rule(
        &self,
        caller: &Caller,
        id: RegistryId,
        rule_id: RuleId,
        expected: Option<u64>,
        tp: Option<TraceParent>,
    ) -> Result<(), CommandError> {
        self.live(id).await?;
        if self.store.rule(id, rule_id.as_str()).await?.is_none() {
            return Err(CommandError::RuleNotFound(id, rule_id.to_string()));
        }
        let version = match expected {
            Some(v) => v,
            None => self.store.rules_version(id).await?,
        };
        let removed = RuleRemoved {
            registry_id: id,
            rule_id,
        };
        self.commit(
            self.envelope(caller, removed, tp),
            Expect::LastSequence(version),
        )
        .await?;
        Ok(())
    }

    /// The webhook secret of a registry, to compare with what a notification presents.
    pub async fn webhook_secret(
        &self,
        r: &Registry,
    ) -> Result<Option<secrecy::SecretString>, CommandError> {
        let Some(sealed) = &r.webhook_secret else {
            return Ok(None);
        };
        let plain = self
            .vault
            .open_field(r.id, WEBHOOK_FIELD, sealed)
            .await
            .map_err(|e| self.secrets_error(r.id, e))?;
        let s = String::from_utf8(plain.expose_secret().clone())
            .map_err(|_| CommandError::Unavailable("stored webhook secret unreadable".into()))?;
        Ok(Some(secrecy::SecretString::from(s)))
    }
}
