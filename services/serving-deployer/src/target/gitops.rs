//! The gitops target: `<namespace>/<name>.yaml` in a local git repository, one commit per
//! change naming the deployment and the actor. Writing the same manifests again commits
//! nothing, so a redeploy of the same spec and a replay are no-ops.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::Command;
use tokio::sync::Mutex;

use super::{Applied, Change, TargetError};
use crate::render::{Manifest, yaml_documents};

#[derive(Debug, Clone)]
pub struct Gitops {
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, TargetError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "imagelib")
        .env("GIT_AUTHOR_EMAIL", "imagelib@localhost")
        .env("GIT_COMMITTER_NAME", "imagelib")
        .env("GIT_COMMITTER_EMAIL", "imagelib@localhost")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .map_err(|e| TargetError::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(TargetError::Git(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Gitops {
    /// Open the repository at `dir`, creating and `git init`ing it if missing.
    pub async fn open(dir: &Path) -> Result<Self, TargetError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| TargetError::Git(format!("cannot create {}: {e}", dir.display())))?;
        if !dir.join(".git").exists() {
            git(dir, &["init", "--quiet", "--initial-branch=main"]).await?;
            tokio::fs::write(
                dir.join("README.md"),
                "# imagelib gitops\n\nManifests rendered by imagelib's serving-deployer, one file per deployment: `<namespace>/<name>.yaml`.\nPoint Argo CD or Flux at this repository.\n",
            )
            .await
            .map_err(|e| TargetError::Git(e.to_string()))?;
            git(dir, &["add", "README.md"]).await?;
            git(
                dir,
                &[
                    "commit",
                    "--quiet",
                    "-m",
                    "imagelib: initialise the gitops repository",
                ],
            )
            .await?;
        }
        Ok(Gitops {
            dir: dir.to_owned(),
            lock: Arc::new(Mutex::new(())),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rel_path(change: &Change<'_>) -> String {
        format!("{}/{}.yaml", change.namespace, change.name)
    }

    pub async fn apply(
        &self,
        change: &Change<'_>,
        manifests: &[Manifest],
    ) -> Result<Applied, TargetError> {
        let _guard = self.lock.lock().await;
        let rel = Self::rel_path(change);
        let path = self.dir.join(&rel);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| TargetError::Git(e.to_string()))?;
        }
        let body = yaml_documents(manifests);
        let unchanged =
            tokio::fs::read_to_string(&path).await.ok().as_deref() == Some(body.as_str());
        if unchanged {
            return Ok(Applied {
                revision: git(&self.dir, &["rev-parse", "HEAD"]).await?,
                changed: false,
            });
        }
        tokio::fs::write(&path, &body)
            .await
            .map_err(|e| TargetError::Git(e.to_string()))?;
        git(&self.dir, &["add", "--", &rel]).await?;
        let message = format!(
            "deploy {}/{} (deployment {})\n\nRequested by {} through imagelib.",
            change.namespace, change.name, change.deployment_id, change.actor
        );
        git(
            &self.dir,
            &["commit", "--quiet", "-m", &message, "--", &rel],
        )
        .await?;
        Ok(Applied {
            revision: git(&self.dir, &["rev-parse", "HEAD"]).await?,
            changed: true,
        })
    }

    pub async fn delete(&self, change: &Change<'_>) -> Result<Applied, TargetError> {
        let _guard = self.lock.lock().await;
        let rel = Self::rel_path(change);
        if !self.dir.join(&rel).exists() {
            return Ok(Applied {
                revision: git(&self.dir, &["rev-parse", "HEAD"]).await?,
                changed: false,
            });
        }
        git(&self.dir, &["rm", "--quiet", "--", &rel]).await?;
        let message = format!(
            "delete {}/{} (deployment {})\n\nRequested by {} through imagelib.",
            change.namespace, change.name, change.deployment_id, change.actor
        );
        git(&self.dir, &["commit", "--quiet", "-m", &message]).await?;
        Ok(Applied {
            revision: git(&self.dir, &["rev-parse", "HEAD"]).await?,
            changed: true,
        })
    }
}
