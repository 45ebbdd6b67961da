//! `imagelib keys …`: master-key rotation.
//!
//! Rotation puts a new primary key first in `IMAGELIB_MASTER_KEY_FILE` (the old ones stay
//! for unwrapping) and re-wraps every registry data key with it. Services read the file
//! when they start, so restart them afterwards; once all run with the new file, the old
//! lines can be deleted.

use std::sync::Arc;

use clap::Subcommand;
use imagelib_platform::config::CommonConfig;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new primary master key and re-wrap every data key with it.
    Rotate,
    /// Re-wrap every data key not wrapped by the primary master key (after editing the file).
    Rewrap,
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let common: CommonConfig = imagelib_platform::config::load()?;
    let path = &common.master_key_file;
    let keyring = match cmd {
        KeysCommand::Rotate => imagelib_secrets::MasterKeyring::rotate_file(path)?,
        KeysCommand::Rewrap => imagelib_secrets::MasterKeyring::load(path)?,
    };
    let keys_bucket = std::env::var("IMAGELIB_KEYS_BUCKET")
        .unwrap_or_else(|_| imagelib_secrets::bucket_for_stream(&common.stream));
    let client = common.nats_connect().connect("imagelib-keys").await?;
    let js = async_nats::jetstream::new(client);
    let vault = imagelib_secrets::Vault::connect(
        &js,
        &keys_bucket,
        common.stream_replicas,
        Arc::new(keyring),
    )
    .await?;
    let n = vault.rewrap_all().await?;
    writeln!(
        std::io::stdout(),
        "primary master key {} in {}; {n} data keys re-wrapped.\nRestart the imagelib services so they load the new key file.",
        vault.keyring().primary_id(),
        path.display()
    )?;
    Ok(())
}
