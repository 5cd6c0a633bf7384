//! hark-relay: the thread-per-core relay server.
//!
//! Starts one shard per configured core (see `hark-relay --help` and docs/relay-config.md),
//! serves the admin endpoint, prints one line once every shard accepts:
//!
//! ```text
//! hark-relay listening client=127.0.0.1:7400 admin=127.0.0.1:7401 shards=2
//! ```
//!
//! (a cluster host adds ` cluster=IP:PORT`, its bound cluster address)
//!
//! and drains on SIGTERM, SIGINT or `POST /drain` on the admin endpoint (exit 0), or exits 1
//! when a shard fails.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use hark_core::ShardId;
use hark_relay::admin::{AdminServer, DrainTrigger};
use hark_relay::config::{ConfigError, RelayConfig};
use hark_relay::metrics::Registry;
use hark_relay::runtime::{DrainHandle, Relay, RuntimeCluster, RuntimeConfig};
use hark_relay::secret::{SecretSource, load_keyring};
use hark_relay::signals;

fn main() -> ExitCode {
    let config = match RelayConfig::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Clap(error)) => error.exit(),
        Err(error) => {
            eprintln!("hark-relay: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    match run(&config) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("hark-relay: {error}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(config: &RelayConfig) -> Result<ExitCode, String> {
    // Before any thread starts, so every thread inherits the mask and only the signal
    // thread receives SIGTERM / SIGINT.
    signals::block_termination().map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}"))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create the data dir {}: {e}",
            config.data_dir.display()
        )
    })?;
    let (keyring, source) = load_keyring(config).map_err(|e| e.to_string())?;
    match &source {
        SecretSource::Created(path) => {
            tracing::info!(path = %path.display(), "created a new secret; clients given this data dir mint their tokens from it")
        }
        SecretSource::Existing(path) | SecretSource::Configured(path) => {
            tracing::info!(path = %path.display(), "secret loaded")
        }
    }
    let admin_listener = std::net::TcpListener::bind(config.admin)
        .map_err(|e| format!("cannot listen for admin on {}: {e}", config.admin))?;
    let shards: Vec<ShardId> = (0..config.cores.len())
        .map(|i| ShardId::new(config.host_id, i as u16))
        .collect();
    let registry = Registry::new(&shards);
    let admin = AdminServer::start(admin_listener, Arc::clone(&registry))
        .map_err(|e| format!("cannot start the admin endpoint: {e}"))?;
    let runtime = RuntimeConfig {
        host: hark_core::HostId(config.host_id),
        cpus: config.cores.iter().copied().map(Some).collect(),
        data_dir: config.data_dir.clone(),
        shard: config.shard.clone(),
        store: config.store.clone(),
        mesh_lane_capacity: config.mesh_lane_capacity,
        cluster: config.cluster.as_ref().map(|cluster| RuntimeCluster {
            listen: cluster.listen,
            seeds: cluster.seeds.clone(),
            advertise: cluster.advertise,
            weight_per_core: cluster.weight_per_core,
        }),
    };
    let relay = Relay::start(&runtime, config.listen, &keyring, Arc::clone(&registry))
        .map_err(|e| e.to_string())?;
    let drain = Arc::new(Mutex::new(
        relay
            .drain_handle()
            .map_err(|e| format!("cannot set up draining: {e}"))?,
    ));
    let signal_drain = Arc::clone(&drain);
    let signal_registry = Arc::clone(&registry);
    signals::watch_termination(move |signal| {
        tracing::info!(signal, "draining");
        start_drain(&signal_registry, &signal_drain);
    })
    .map_err(|e| format!("cannot watch for SIGTERM/SIGINT: {e}"))?;
    let admin_drain = Arc::clone(&drain);
    let admin_registry = Arc::clone(&registry);
    admin.set_drain(DrainTrigger::new(move || {
        tracing::info!("draining: asked on the admin endpoint");
        start_drain(&admin_registry, &admin_drain);
    }));
    registry.set_ready(true);
    tracing::info!(
        client = %relay.client_addr(),
        admin = %admin.local_addr(),
        shards = shards.len(),
        io = ?relay.io_mode(),
        "serving"
    );
    let mut stdout = std::io::stdout().lock();
    let cluster = relay
        .cluster_addr()
        .map(|addr| format!(" cluster={addr}"))
        .unwrap_or_default();
    let _ = writeln!(
        stdout,
        "hark-relay listening client={} admin={} shards={}{cluster}",
        relay.client_addr(),
        admin.local_addr(),
        shards.len()
    );
    let _ = stdout.flush();
    drop(stdout);

    let mut code = ExitCode::SUCCESS;
    let mut running = shards.len();
    while running > 0 {
        match relay.wait_exit() {
            Some((shard, None)) => {
                tracing::info!(shard, "shard drained");
                running -= 1;
            }
            Some((shard, Some(reason))) => {
                tracing::error!(shard, %reason, "shard failed; draining the others");
                code = ExitCode::from(1);
                start_drain(&registry, &drain);
                running -= 1;
            }
            None => break,
        }
    }
    relay.join();
    admin.stop();
    Ok(code)
}

/// Starts the drain (SIGTERM, SIGINT, `POST /drain` or a failed shard); harmless to repeat.
fn start_drain(registry: &Registry, drain: &Mutex<DrainHandle>) {
    registry.set_draining(true);
    // A poisoned lock means another drain call panicked mid-way; the handle is still usable.
    let mut drain = drain
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drain.drain();
}
