//! The command side of subscriptions: each command is checked, becomes an event appended
//! with the aggregate's expected sequence, and is applied before the call returns.
//!
//! The signing secret is sealed in the vault under a data key of the subscription's own
//! (the vault's per-registry keys, keyed by the subscription id, with the field name in the
//! AAD): the event log only ever holds the sealed value, and removing the subscription
//! destroys the key, so the secret is unrecoverable from the log afterwards.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use imagelib_events::bus::{BusError, EventBus, Expect};
use imagelib_events::event::{
    SubscriptionCreated, SubscriptionRemoved, SubscriptionReplayRequested,
};
use imagelib_events::{Envelope, EventPayload, RegistryId, SubscriptionId, TraceParent};
use imagelib_platform::auth::Caller;
use imagelib_secrets::Vault;
use registry_client::NetworkGuard;
use secrecy::{ExposeSecret, SecretString};

use super::store::{Subscription, SubscriptionStore};
use super::{SECRET_FIELD, SigningKey};

/// Why a subscription command was refused; mapped once to a problem in [`super::api`].
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// (JSON pointer, message).
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// The URL is an address the network guard denies.
    #[error("{0}")]
    Blocked(String),
    #[error("subscription {0} not found")]
    NotFound(SubscriptionId),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error("secrets: {0}")]
    Secrets(#[from] imagelib_secrets::SecretsError),
}

impl From<BusError> for SubscriptionError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Conflict { .. } => SubscriptionError::Conflict(
                "the subscription changed since you read it; read it again and retry".into(),
            ),
            other => SubscriptionError::Unavailable(format!("event stream: {other}")),
        }
    }
}

fn invalid(pointer: &str, message: impl Into<String>) -> SubscriptionError {
    SubscriptionError::Invalid(pointer.to_owned(), message.into())
}

/// The vault's key id of a subscription: its own data key, never a registry's.
pub(crate) fn key_id(id: SubscriptionId) -> RegistryId {
    RegistryId(id.0)
}

/// A subscription to create, as checked.
#[derive(Debug)]
pub struct NewSubscription {
    pub url: String,
    pub types: Vec<String>,
    pub description: String,
    /// `None`: generate one and return it once.
    pub secret: Option<SecretString>,
}

/// The subscription commands.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    pub(crate) bus: EventBus,
    pub(crate) store: SubscriptionStore,
    pub(crate) vault: Arc<Vault>,
    pub(crate) guard: NetworkGuard,
    pub(crate) allow_http: bool,
    /// Wakes the delivery supervisor when the set of subscriptions changed here.
    pub(crate) changed: Arc<tokio::sync::Notify>,
}

impl Subscriptions {
    pub fn new(
        bus: EventBus,
        store: SubscriptionStore,
        vault: Arc<Vault>,
        guard: NetworkGuard,
        allow_http: bool,
    ) -> Self {
        Subscriptions {
            bus,
            store,
            vault,
            guard,
            allow_http,
            changed: Arc::default(),
        }
    }

    pub fn store(&self) -> &SubscriptionStore {
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

    async fn commit(&self, env: Envelope, expect: Expect) -> Result<u64, SubscriptionError> {
        let receipt = self.bus.append(&env, expect).await?;
        self.store.apply(receipt.sequence, &env).await?;
        self.changed.notify_one();
        Ok(receipt.sequence)
    }

    /// Checks a subscription URL: `https://` (`http://` only where allowed), a host, no
    /// user-info (it would sit in the event log in the clear) and no fragment, and not an
    /// IP literal the guard denies. Names are checked when deliveries resolve them.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, SubscriptionError> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 2048 {
            return Err(invalid(
                "/url",
                "an https:// URL of at most 2048 characters",
            ));
        }
        let url = url::Url::parse(raw).map_err(|e| {
            invalid(
                "/url",
                format!("not a URL ({e}); e.g. https://hooks.example.com/imagelib"),
            )
        })?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(invalid(
                    "/url",
                    "http:// is not accepted: deliveries go over https:// (a deployment may allow \
                     http:// with IMAGELIB_SUBSCRIPTIONS_ALLOW_HTTP=true)",
                ));
            }
            other => return Err(invalid("/url", format!("`{other}://` is not https://"))),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("/url", "the URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "/url",
                "user-info (user:password@) is refused: the URL is stored in the event log in the \
                 clear; the endpoint authenticates deliveries by their signature",
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid("/url", "a fragment (#…) is never sent; remove it"));
        }
        self.guard
            .check_url(&url)
            .map_err(|e| SubscriptionError::Blocked(e.to_string()))?;
        Ok(url)
    }

    /// Create: the secret (given or generated) is sealed into `subscription.created`.
    /// Returns the subscription and, when it was generated, the secret (shown once).
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewSubscription,
        tp: Option<TraceParent>,
    ) -> Result<(Subscription, Option<SecretString>), SubscriptionError> {
        let (secret, generated) = match new.secret {
            Some(s) => {
                super::check_secret(s.expose_secret()).map_err(|m| invalid("/secret", m))?;
                (s, false)
            }
            None => (super::generate_secret(), true),
        };
        let id = SubscriptionId::new();
        let sealed = self
            .vault
            .seal_field(key_id(id), SECRET_FIELD, secret.expose_secret().as_bytes())
            .await?;
        let created = SubscriptionCreated {
            subscription_id: id,
            url: new.url,
            types: new.types,
            secret: sealed,
            description: new.description,
        };
        self.commit(self.envelope(caller, created, tp), Expect::NoEvents)
            .await?;
        let s = self.live(id).await?;
        Ok((s, generated.then_some(secret)))
    }

    /// A subscription that exists and is not removed.
    pub async fn live(&self, id: SubscriptionId) -> Result<Subscription, SubscriptionError> {
        match self.store.get(id).await? {
            Some(s) if s.removed_at.is_none() => Ok(s),
            _ => Err(SubscriptionError::NotFound(id)),
        }
    }

    /// Remove: deliveries stop, queued and dead-lettered events are dropped, and the
    /// secret's data key is destroyed (retried by the delivery supervisor if that fails).
    pub async fn remove(
        &self,
        caller: &Caller,
        id: SubscriptionId,
        expected: Option<u64>,
        tp: Option<TraceParent>,
    ) -> Result<(), SubscriptionError> {
        let current = self.live(id).await?;
        self.commit(
            self.envelope(
                caller,
                SubscriptionRemoved {
                    subscription_id: id,
                },
                tp,
            ),
            Expect::LastSequence(expected.unwrap_or(current.last_sequence)),
        )
        .await?;
        match self.vault.shred(key_id(id)).await {
            Ok(()) => self.store.mark_shredded(id).await?,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "destroying the subscription's data key failed; the delivery supervisor retries");
            }
        }
        Ok(())
    }

    /// Ask for the matching events appended in [`from`, `to`) to be delivered again.
    pub async fn replay(
        &self,
        caller: &Caller,
        id: SubscriptionId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tp: Option<TraceParent>,
    ) -> Result<u64, SubscriptionError> {
        if from >= to {
            return Err(invalid("/to", "`to` must be after `from`"));
        }
        if from > Utc::now() {
            return Err(invalid(
                "/from",
                "`from` is in the future: nothing was appended then yet",
            ));
        }
        let current = self.live(id).await?;
        self.commit(
            self.envelope(
                caller,
                SubscriptionReplayRequested {
                    subscription_id: id,
                    from,
                    to,
                },
                tp,
            ),
            Expect::LastSequence(current.last_sequence),
        )
        .await
    }

    /// The subscription's signing key, opened from the vault.
    pub(crate) async fn signing_key(
        &self,
        s: &Subscription,
    ) -> Result<SigningKey, SubscriptionError> {
        let Some(sealed) = &s.secret else {
            return Err(SubscriptionError::NotFound(s.id));
        };
        let plain = self
            .vault
            .open_field(key_id(s.id), SECRET_FIELD, sealed)
            .await?;
        let text = std::str::from_utf8(plain.expose_secret())
            .map_err(|_| SubscriptionError::Unavailable("stored secret unreadable".into()))?;
        SigningKey::from_secret(text).map_err(SubscriptionError::Unavailable)
    }
}
