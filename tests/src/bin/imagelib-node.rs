//! `imagelib serve` as a binary of this crate, so that the cluster test and bench can run
//! it as real child processes (`CARGO_BIN_EXE_imagelib-node`), kill them with SIGKILL
//! and start them again. Configured by `IMAGELIB_*` like `imagelib serve`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match imagelib::serve::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imagelib-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
