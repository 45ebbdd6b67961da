//! Curator commands: HM tags, READMEs, approvals. Each is checked against the projection
//! (the repository exists and the caller sees it; a tag exists; the input is valid),
//! appended as a `catalog.*` event, and applied to the projection before the call returns.

use std::sync::Arc;

use imagelib_events::bus::{BusError, EventBus, Expect};
use imagelib_events::event::{
    CatalogApproved, CatalogLabeled, CatalogReadmeSet, CatalogRejected, CatalogUnlabeled,
};
use imagelib_events::model::{CatalogTarget, HmTag};
use imagelib_events::{
    Digest, Envelope, EventPayload, ImageId, RegistryId, RepositoryName, Tag, TraceParent,
};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Tokens};
use imagelib_platform::connections::Connections;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::cache::{Listener, PageCache};
use crate::api::images::KeptPage;
use crate::api::repositories::KeptRepository;
use crate::api::rows::RowCache;
use crate::projection::Projection;
use crate::query::{ImageFilter, Teams};
use crate::worker::Status;

/// Largest README accepted, in bytes.
pub const MAX_README_BYTES: usize = 256 * 1024;
/// Longest approval or rejection reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// Why a command was refused; mapped to a problem once.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    NotFound(String),
    #[error("{pointer}: {message}")]
    Invalid { pointer: String, message: String },
    /// The tag no longer points at the digest the caller decided on.
    #[error("{0}")]
    DigestMismatch(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl From<BusError> for CommandError {
    fn from(e: BusError) -> Self {
        CommandError::Unavailable(format!("event stream: {e}"))
    }
}

impl From<CommandError> for Problem {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(m) => Problem::not_found(m),
            CommandError::Invalid { pointer, message } => Problem::validation(pointer, message),
            CommandError::DigestMismatch(m) => Problem::conflict(m).with_code("digest-mismatch"),
            CommandError::Unavailable(m) => {
                tracing::warn!(error = %m, "dependency unavailable");
                Problem::unavailable("a dependency is unavailable; retry shortly")
            }
            CommandError::Sql(e) if crate::projection::is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::unavailable("the database is unavailable; retry shortly")
            }
            CommandError::Sql(e) => Problem::internal(&e),
        }
    }
}

pub(crate) fn invalid(pointer: &str, message: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        pointer: pointer.to_owned(),
        message: message.into(),
    }
}

/// A repository of a registry, as addressed by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub registry_id: RegistryId,
    pub name: RepositoryName,
}

impl RepoRef {
    pub fn id(&self) -> Uuid {
        ImageId::derive(self.registry_id, &self.name).0
    }

    fn target(&self, tag: Option<Tag>) -> CatalogTarget {
        CatalogTarget {
            registry_id: self.registry_id,
            repository: self.name.clone(),
            tag,
        }
    }
}

/// The catalog service's state: the projection, the stream, the tokens, the kept pages.
#[derive(Debug, Clone)]
pub struct Catalog {
    bus: EventBus,
    projection: Projection,
    tokens: Tokens,
    status: Option<Arc<Status>>,
    images: Arc<PageCache<ImageFilter, KeptPage>>,
    rows: Arc<RowCache>,
    /// Connections that plan prepared statements once ([`Catalog::list_pool`]).
    lists: PgPool,
    /// The same, handed back without a round trip ([`Catalog::reads`]).
    reads: Arc<Connections>,
    repositories: Arc<PageCache<(Teams, Uuid), KeptRepository>>,
}

impl Catalog {
    /// With a page cache of `mb` MiB and a row cache of `rows_mb` MiB (0: none; see
    /// [`crate::config::CatalogSettings::page_cache_mb`] and `row_cache_mb`).
    pub fn with_caches(
        bus: EventBus,
        projection: Projection,
        tokens: Tokens,
        mb: usize,
        rows_mb: usize,
    ) -> Self {
        let listener = Arc::new(Listener::new(projection.pool().clone()));
        let pool = projection.pool();
        let generic = pool.connect_options().as_ref().clone().options([
            ("plan_cache_mode", "force_generic_plan"),
            // A page is a few index ranges: a parallel plan never pays, and a search
            // page relies on its nested loop's order (`query::images_named`).
            ("max_parallel_workers_per_gather", "0"),
        ]);
        let lists = sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool.options().get_max_connections())
            .test_before_acquire(false)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(generic.clone());
        let reads = Arc::new(Connections::new(
            generic,
            pool.options().get_max_connections(),
            pool.options().get_acquire_timeout(),
        ));
        Catalog {
            bus,
            projection,
            tokens,
            status: None,
            // One budget shared: the image pages get three quarters.
            images: Arc::new(PageCache::new(
                "images",
                mb.saturating_mul(3 << 18),
                listener.clone(),
            )),
            repositories: Arc::new(PageCache::new(
                "repositories",
                mb.saturating_mul(1 << 18),
                listener.clone(),
            )),
            rows: Arc::new(RowCache::new(rows_mb.saturating_mul(1 << 20), listener)),
            lists,
            reads,
        }
    }

    /// The repositories' details kept.
    pub(crate) fn repository_pages(&self) -> &PageCache<(Teams, Uuid), KeptRepository> {
        &self.repositories
    }

    /// Where the lists' prepared statements run: on connections that always use the
    /// generic plan. PostgreSQL otherwise plans a statement with its values for five
    /// executions, then keeps doing so whenever the generic plan's estimate is a little
    /// above theirs, as it is for a repository's page of one kind (the same plan, planned
    /// again on every read: 0.4–1 ms against a 0.2 ms execution). A statement whose plan
    /// must see its values (a search ordered otherwise than by name) runs on [`Self::pool`].
    pub(crate) fn list_pool(&self) -> &PgPool {
        &self.lists
    }

    /// [`Self::list_pool`]'s connections for the statements of a page read by the API:
    /// taken back without the round trip sqlx's pool makes on each release
    /// ([`imagelib_platform::connections`]).
    pub(crate) fn reads(&self) -> &Connections {
        &self.reads
    }

    /// The image rows kept rendered.
    pub(crate) fn image_rows(&self) -> &RowCache {
        &self.rows
    }

    /// The Image and Model Library pages kept.
    pub(crate) fn image_pages(&self) -> &PageCache<ImageFilter, KeptPage> {
        &self.images
    }

    pub fn with_status(mut self, status: Arc<Status>) -> Self {
        self.status = Some(status);
        self
    }

    pub fn pool(&self) -> &PgPool {
        self.projection.pool()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    pub fn status(&self) -> Option<&Arc<Status>> {
        self.status.as_ref()
    }

    /// The repository's id if it exists and the caller sees its registry.
    pub async fn visible_repository(
        &self,
        caller: &Caller,
        repo: &RepoRef,
    ) -> Result<Uuid, CommandError> {
        let id = repo.id();
        let found: Option<Uuid> = sqlx::query_scalar(
            "SELECT r.id FROM repositories r JOIN registries g ON g.id = r.registry_id
             WHERE r.id = $1 AND g.removed_at IS NULL
               AND ($2::text[] IS NULL OR cardinality(g.visibility) = 0 OR g.visibility && $2)",
        )
        .bind(id)
        .bind(caller.team_filter())
        .fetch_optional(self.pool())
        .await?;
        found.ok_or_else(|| {
            CommandError::NotFound(format!(
                "repository `{}` of registry {} not found",
                repo.name, repo.registry_id
            ))
        })
    }

    /// The digest a tag of the repository points at now.
    async fn current_digest(
        &self,
        repo: &RepoRef,
        repo_id: Uuid,
        tag: &Tag,
    ) -> Result<Digest, CommandError> {
        let digest: Option<String> = sqlx::query_scalar(
            "SELECT digest FROM tag_versions WHERE repo_id = $1 AND tag = $2 AND valid_to IS NULL",
        )
        .bind(repo_id)
        .bind(tag.as_str())
        .fetch_optional(self.pool())
        .await?;
        digest.and_then(|d| d.parse().ok()).ok_or_else(|| {
            CommandError::NotFound(format!("tag `{tag}` of `{}` not found", repo.name))
        })
    }

    /// Append and apply: the caller reads its own write.
    async fn commit(
        &self,
        caller: &Caller,
        payload: impl Into<EventPayload>,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        let env = Envelope::new(crate::NAME, payload)
            .with_actor(caller.subject.clone())
            .with_traceparent(tp);
        let receipt = self.bus.append(&env, Expect::Any).await?;
        self.projection
            .apply_out_of_band(receipt.sequence, &env)
            .await?;
        Ok(receipt.sequence)
    }

    /// Put (`present`) or remove an HM tag on a repository or one of its tags.
    pub async fn label(
        &self,
        caller: &Caller,
        repo: &RepoRef,
        tag: Option<Tag>,
        hm_tag: HmTag,
        present: bool,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        let repo_id = self.visible_repository(caller, repo).await?;
        if let Some(t) = &tag {
            self.current_digest(repo, repo_id, t).await?;
        }
        let target = repo.target(tag);
        if present {
            self.commit(caller, CatalogLabeled { target, hm_tag }, tp)
                .await
        } else {
            self.commit(caller, CatalogUnlabeled { target, hm_tag }, tp)
                .await
        }
    }

    pub async fn set_readme(
        &self,
        caller: &Caller,
        repo: &RepoRef,
        tag: Option<Tag>,
        readme: String,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        if readme.len() > MAX_README_BYTES {
            return Err(invalid(
                "/readme",
                format!("at most {MAX_README_BYTES} bytes of Markdown"),
            ));
        }
        if readme.contains('\0') {
            return Err(invalid("/readme", "must not contain NUL characters"));
        }
        let repo_id = self.visible_repository(caller, repo).await?;
        if let Some(t) = &tag {
            self.current_digest(repo, repo_id, t).await?;
        }
        let target = repo.target(tag);
        self.commit(caller, CatalogReadmeSet { target, readme }, tp)
            .await
    }

    /// Approve or reject a repository, or a tag at its current digest — when `expected` is
    /// given, only if that is the tag's current digest.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide(
        &self,
        caller: &Caller,
        repo: &RepoRef,
        tag: Option<Tag>,
        expected: Option<Digest>,
        approve: bool,
        reason: String,
        tp: Option<TraceParent>,
    ) -> Result<u64, CommandError> {
        let reason = reason.trim().to_owned();
        if !approve && reason.is_empty() {
            return Err(invalid("/reason", "a rejection needs a reason"));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                "/reason",
                format!("at most {MAX_REASON_CHARS} characters"),
            ));
        }
        if reason.contains('\0') {
            return Err(invalid("/reason", "must not contain NUL characters"));
        }
        let repo_id = self.visible_repository(caller, repo).await?;
        let digest = match &tag {
            Some(t) => Some(self.current_digest(repo, repo_id, t).await?),
            None => None,
        };
        if let (Some(want), Some(now), Some(t)) = (&expected, &digest, &tag)
            && want != now
        {
            return Err(CommandError::DigestMismatch(format!(
                "tag `{t}` of `{}` points at {now}, not {want}: it moved again since that digest was reviewed; review {now} and decide on it",
                repo.name
            )));
        }
        let target = repo.target(tag);
        if approve {
            self.commit(
                caller,
                CatalogApproved {
                    target,
                    digest,
                    reason,
                },
                tp,
            )
            .await
        } else {
            self.commit(
                caller,
                CatalogRejected {
                    target,
                    digest,
                    reason,
                },
                tp,
            )
            .await
        }
    }
}
