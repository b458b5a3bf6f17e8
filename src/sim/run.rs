//! The one shape every `roadedge sim ...` command shares: how long it runs (`--duration`), how
//! often it prints its figures (`--stats-every`), how much it logs (`--log`), and the same
//! progress and final lines (`[   5s] ...`, `done in 12.3s: ...`), so a script or a person reading
//! one simulator's output can read them all.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Options of every simulator command (flattened into each one's arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m); runs until Ctrl-C when absent.
    #[arg(long)]
    pub duration: Option<String>,
    /// Print the running figures this often (0s: only the final line).
    #[arg(long, default_value = "5s")]
    pub stats_every: String,
    /// Log filter for the simulator's own diagnostics (tracing syntax: warn, info, roadedge=debug).
    #[arg(long, default_value = "warn")]
    pub log: String,
}

/// A simulator run in progress: its stop token (Ctrl-C, SIGTERM or `--duration`) and clock.
pub struct SimRun {
    pub shutdown: CancellationToken,
    /// The `--duration`, when given.
    pub duration: Option<Duration>,
    started: Instant,
    stats_every: Option<Duration>,
}

impl RunArgs {
    /// Parses the options, starts logging and the stop token.
    pub fn start(&self) -> anyhow::Result<SimRun> {
        let parse =
            |what: &str, text: &str| crate::config::parse_duration(text).map_err(|e| anyhow::anyhow!("--{what}: {e}"));
        let duration = self.duration.as_deref().map(|d| parse("duration", d)).transpose()?;
        let stats_every = parse("stats-every", &self.stats_every)?;
        crate::ops::logging::parse_level(&self.log).map_err(|e| anyhow::anyhow!("--log: {e}"))?;
        crate::ops::logging::init(&self.log);
        Ok(SimRun {
            shutdown: crate::ops::shutdown::stop_token(duration),
            duration,
            started: Instant::now(),
            stats_every: (!stats_every.is_zero()).then_some(stats_every),
        })
    }
}

/// How long a simulator may take to wind down (log out, close) once told to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

impl SimRun {
    /// Seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Drives `work` to its end, printing `summary()` every `--stats-every` meanwhile and once
    /// more at the end. `work` watches [`SimRun::shutdown`] itself (vehicles log out, terminals
    /// close); once the token fires it gets [`STOP_GRACE`] to finish, else it is dropped and the
    /// result is `None`.
    pub async fn report<T>(&self, work: impl Future<Output = T>, summary: impl Fn() -> String) -> Option<T> {
        tokio::pin!(work);
        let mut tick = self
            .stats_every
            .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
        let grace = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        tokio::pin!(grace);
        let result = loop {
            tokio::select! {
                out = &mut work => break Some(out),
                _ = &mut grace => break None,
                _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                    println!("[{:>5}s] {}", self.elapsed().as_secs(), summary());
                }
            }
        };
        println!("done in {:.1}s: {}", self.elapsed().as_secs_f64(), summary());
        result
    }
}
