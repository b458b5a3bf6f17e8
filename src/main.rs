//! The `roadedge` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    roadedge::cli::main()
}
