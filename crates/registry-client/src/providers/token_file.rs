//! Projected token files (Kubernetes service account tokens for IRSA and Azure workload
//! identity, the EKS Pod Identity agent's authorization token).
//!
//! The kubelet rewrites them before they expire, so a file is read again for every exchange
//! and its contents are kept only for that request. Errors name the file and the variable
//! that points at it, never the contents.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::error::{Error, Result};

/// Projected tokens are a few KiB; more is not read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A token file and the environment variable that names it (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    pub path: PathBuf,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`, `AZURE_FEDERATED_TOKEN_FILE`, …
    pub variable: &'static str,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>, variable: &'static str) -> Self {
        TokenFile {
            path: path.into(),
            variable,
        }
    }

    /// The configured file, or a configuration error saying which variable is missing.
    pub fn required(path: Option<&Path>, variable: &'static str, why: &str) -> Result<Self> {
        match path {
            Some(path) if !path.as_os_str().is_empty() => Ok(Self::new(path, variable)),
            _ => Err(Error::Config(format!(
                "{variable} is not set: {why} needs the projected token file it names"
            ))),
        }
    }

    /// The file's current contents, trimmed; an error for a missing, unreadable, oversized
    /// or empty file.
    pub async fn read(&self) -> Result<SecretString> {
        use tokio::io::AsyncReadExt as _;
        let shown = self.path.display();
        let variable = self.variable;
        let file = tokio::fs::File::open(&self.path).await.map_err(|e| {
            Error::Config(format!(
                "cannot read the token file {shown} ({variable}): {}",
                e.kind()
            ))
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| {
                Error::Config(format!(
                    "cannot read the token file {shown} ({variable}): {}",
                    e.kind()
                ))
            })?;
        if bytes.len() as u64 > MAX_TOKEN_FILE {
            return Err(Error::Config(format!(
                "the token file {shown} ({variable}) is larger than {MAX_TOKEN_FILE} bytes"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::Config(format!("the token file {shown} ({variable}) is not text"))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::Config(format!(
                "the token file {shown} ({variable}) is empty"
            )));
        }
        if token.chars().any(|c| c.is_control()) {
            return Err(Error::Config(format!(
                "the token file {shown} ({variable}) holds more than one token line"
            )));
        }
        Ok(SecretString::from(token.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[tokio::test]
    async fn reads_fresh_contents_and_names_the_variable_on_errors() {
        let dir = std::env::temp_dir().join(format!(
            "imagelib-token-file-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let file = TokenFile::new(&path, "AWS_WEB_IDENTITY_TOKEN_FILE");

        let err = file.read().await.unwrap_err().to_string();
        assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");

        std::fs::write(&path, "  \n").unwrap();
        let err = file.read().await.unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");

        std::fs::write(&path, "canary-one\n").unwrap();
        assert_eq!(file.read().await.unwrap().expose_secret(), "canary-one");
        std::fs::write(&path, "canary-two").unwrap();
        assert_eq!(file.read().await.unwrap().expose_secret(), "canary-two");

        std::fs::write(&path, "canary-a\ncanary-b").unwrap();
        let err = file.read().await.unwrap_err().to_string();
        assert!(!err.contains("canary"), "{err}");

        std::fs::write(&path, vec![b'a'; (MAX_TOKEN_FILE + 10) as usize]).unwrap();
        assert!(file.read().await.is_err());

        let err = TokenFile::required(None, "AZURE_FEDERATED_TOKEN_FILE", "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AZURE_FEDERATED_TOKEN_FILE is not set"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
