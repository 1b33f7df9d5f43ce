//! `baton-agent`: the command-line shell over the `baton_agent` library — run the agent, check
//! a configuration, and on Windows install, remove and run it as a Windows service.

use anyhow::{Context, Result};
use baton_agent::{self as agent, AgentConfig};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "baton-agent",
    version,
    about = "Carries out Baton's allow-listed actions on this host, over mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground until Ctrl-C or SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file and its TLS material, then exit.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Install the agent as a Windows service that starts automatically (Windows only).
    Install {
        #[arg(long)]
        config: PathBuf,
    },
    /// Stop and remove the Windows service (Windows only).
    Uninstall,
    /// The entry point the Windows service manager starts (Windows only).
    Service {
        #[arg(long)]
        config: PathBuf,
    },
}

fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn load(config: &Path) -> Result<AgentConfig> {
    AgentConfig::load(config).with_context(|| format!("loading {}", config.display()))
}

/// Resolves when the process is asked to stop.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            logging();
            let config = load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime
                .block_on(agent::run(config, stop_signal()))
                .context("running the agent")
        }
        Command::CheckConfig { config } => {
            let loaded = load(&config)?;
            agent::Agent::new(loaded.clone())
                .with_context(|| format!("checking the files named in {}", config.display()))?;
            println!(
                "{}: ok ({} on {}, executor {}, actions: {})",
                config.display(),
                loaded.host,
                loaded.listen,
                loaded.executor.describe(),
                loaded.actions.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            Ok(())
        }
        #[cfg(windows)]
        Command::Install { config } => service::install(&config),
        #[cfg(windows)]
        Command::Uninstall => service::uninstall(),
        #[cfg(windows)]
        Command::Service { config } => service::run(config),
        #[cfg(not(windows))]
        Command::Install { .. } | Command::Uninstall | Command::Service { .. } => {
            anyhow::bail!(
                "install, uninstall and service are for Windows; on Linux run `baton-agent run` under systemd"
            )
        }
    }
}

/// The Windows service: registration with the service manager, and the service's main loop.
#[cfg(windows)]
mod service {
    use super::*;
    use std::ffi::OsString;
    use std::sync::OnceLock;
    use std::time::Duration;
    use windows_service::service::{
        ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode, ServiceInfo,
        ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    const NAME: &str = "baton-agent";
    const DISPLAY: &str = "Baton agent";
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();

    pub fn install(config: &Path) -> Result<()> {
        let config = std::fs::canonicalize(config).with_context(|| format!("finding {}", config.display()))?;
        load(&config)?;
        let manager = ServiceManager::local_computer(
            None::<&str>,
            ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
        )
        .context("opening the service manager (run as an administrator)")?;
        let info = ServiceInfo {
            name: OsString::from(NAME),
            display_name: OsString::from(DISPLAY),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: std::env::current_exe().context("finding this program")?,
            launch_arguments: vec![
                OsString::from("service"),
                OsString::from("--config"),
                config.clone().into_os_string(),
            ],
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let service = manager
            .create_service(&info, ServiceAccess::CHANGE_CONFIG)
            .context("creating the service")?;
        service
            .set_description("Carries out Baton's allow-listed Lync actions for the bot, over mutual TLS")
            .context("describing the service")?;
        println!(
            "installed the {NAME} service with {}; start it with `sc.exe start {NAME}`",
            config.display()
        );
        Ok(())
    }

    pub fn uninstall() -> Result<()> {
        let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
            .context("opening the service manager (run as an administrator)")?;
        let service = manager
            .open_service(
                NAME,
                ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
            )
            .context("opening the service")?;
        if service.query_status().context("querying the service")?.current_state != ServiceState::Stopped {
            service.stop().context("stopping the service")?;
        }
        service.delete().context("deleting the service")?;
        println!("removed the {NAME} service");
        Ok(())
    }

    pub fn run(config: PathBuf) -> Result<()> {
        let _ = CONFIG.set(config);
        service_dispatcher::start(NAME, ffi_service_main).context("starting under the service manager")
    }

    define_windows_service!(ffi_service_main, service_main);

    fn service_main(_arguments: Vec<OsString>) {
        if let Err(e) = serve() {
            tracing::error!(error = %format!("{e:#}"), "the agent service stopped with an error");
        }
    }

    /// Logs to `<state_dir>\agent.log`: a service has no console.
    fn log_to(state_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.join("agent.log"))?;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init();
        Ok(())
    }

    fn status(state: ServiceState, accept: ServiceControlAccept, code: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        }
    }

    fn serve() -> Result<()> {
        let path = CONFIG.get().context("the service was started without --config")?;
        let config = load(path)?;
        log_to(&config.state_dir)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop_tx = std::sync::Mutex::new(Some(stop_tx));
        let handler = move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(tx) = stop_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let handle = service_control_handler::register(NAME, handler).context("registering the control handler")?;
        handle.set_service_status(status(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        ))?;
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let result = runtime.block_on(agent::run(config, async {
            let _ = stop_rx.await;
        }));
        let code = if result.is_ok() { 0 } else { 1 };
        handle.set_service_status(status(ServiceState::Stopped, ServiceControlAccept::empty(), code))?;
        result.context("running the agent")
    }
}
