//! The `vagrant` provider: one Vagrant machine per instance, in `.tend/vagrant/<instance>/`
//! with a generated `Vagrantfile` for Vagrant's docker provider (a local image, never
//! pulled; SSH and the synced folder off), made by `vagrant up --provider=docker` and
//! removed by `vagrant destroy -f`.
//!
//! Vagrant calls are slow (seconds each), so Vagrant is never asked what exists: the tags
//! are Docker labels set at creation, and instances are observed through them on the
//! engine. A container whose folder is gone is an orphan: it shows as dead, and the next
//! plan reaps it through Docker. Two actions on one instance never overlap.

mod vagrantfile;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use engine::provider::{
    require_tags, tags, InstanceState, ObservedInstance, Provider, ProviderError, ProvisionRequest,
    Selector,
};
use serde_json::Value;

use crate::docker::{self, VIA};

const NAME: &str = "vagrant";
const SETTINGS: [&str; 2] = ["image", "ports"];
/// The engine Vagrant's docker provider drives: the local one.
const ENGINE: &str = "unix:///var/run/docker.sock";
/// Variables passed on to `vagrant` from tend's environment; nothing else is.
const PASS_THROUGH: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"];
/// How many lines of a failed `vagrant` call an error quotes.
const QUOTED_LINES: usize = 8;

fn backend(detail: String) -> ProviderError {
    ProviderError::backend(NAME, detail)
}

fn invalid(detail: String) -> ProviderError {
    ProviderError::invalid(NAME, detail)
}

/// The settings of a `vagrant(...)` provider.
struct Settings {
    image: String,
    /// Container port to host port (0: the engine picks one).
    ports: Vec<(u16, u16)>,
}

fn settings(props: &BTreeMap<String, Value>) -> Result<Settings, ProviderError> {
    if let Some(other) = props.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown setting {other:?}; vagrant takes {}",
            SETTINGS.join(", ")
        )));
    }
    let image = props
        .get("image")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid("vagrant() needs an image".to_owned()))?
        .to_owned();
    let ports = docker::published(NAME, props)?;
    Ok(Settings { image, ports })
}

/// A name for a new instance: its container's name, its folder's and its id. Made from
/// its idempotency key when it has one, so a provision made again names the same machine.
fn instance_name(request: &ProvisionRequest) -> String {
    let word = crate::word_for(request.labels.get(tags::KEY).map(String::as_str));
    let t = &request.tags;
    format!("tend-{}-{}-{}-{word}", t.project, t.group, t.slot)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The folder of instance secret files in memory.
fn secrets_name(instance: &str) -> String {
    format!("vagrant-{instance}")
}

/// What `vagrant COMMAND` said for instance `name`, in tend's log (target `tend::vagrant`,
/// fields `tool` and `instance`): its output at info, its errors as warnings.
fn forward(name: &str, command: &str, output: &std::process::Output) {
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim_end();
        if !line.trim().is_empty() {
            tracing::info!(target: "tend::vagrant", tool = "vagrant", instance = name, command, "{line}");
        }
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        let line = line.trim_end();
        if !line.trim().is_empty() {
            tracing::warn!(target: "tend::vagrant", tool = "vagrant", instance = name, command, "{line}");
        }
    }
}

/// What a failed `vagrant` call said, for an error: the engine's own words when Vagrant
/// quotes them (after `Stderr:`), else the first lines of its error, which name the cause.
fn tail(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = match stderr.split_once("Stderr:") {
        Some((_, engine)) => engine
            .split("Stdout:")
            .next()
            .unwrap_or_default()
            .to_owned(),
        None if !stderr.trim().is_empty() => stderr.into_owned(),
        None => String::from_utf8_lossy(&output.stdout).into_owned(),
    };
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(QUOTED_LINES)
        .collect();
    lines.join(" ")
}

/// The `docker run --env-file` text of `env`; a value on several lines cannot be one.
fn environment_file(env: &BTreeMap<String, String>) -> Result<String, ProviderError> {
    let mut text = String::new();
    for (name, value) in env {
        if value.contains('\n') || value.contains('\r') {
            return Err(invalid(format!(
                "environment variable {name} holds a line break, which vagrant() cannot pass to its container"
            )));
        }
        text.push_str(&format!("{name}={value}\n"));
    }
    Ok(text)
}

/// The memory folder of a machine's environment file.
fn environment_name(instance: &str) -> String {
    format!("vagrant-{instance}-environment")
}

/// Containers as Vagrant machines.
pub struct VagrantProvider {
    inner: Arc<Machines>,
}

impl VagrantProvider {
    /// A vagrant provider keeping its machines' folders under `state_dir/vagrant/`.
    pub fn new(state_dir: &Path) -> Self {
        VagrantProvider {
            inner: Arc::new(Machines {
                dir: state_dir.join("vagrant"),
                locks: Mutex::new(HashMap::new()),
                program: tokio::sync::OnceCell::new(),
                client: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Runs `action` on instance `name` holding its lock, in a task of its own: actions
    /// on one instance never overlap, in this tend or another, and a caller that stops
    /// waiting does not cut one short.
    async fn on_instance<T, F>(
        &self,
        name: &str,
        action: impl FnOnce(Arc<Machines>, String) -> F,
    ) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, ProviderError>> + Send + 'static,
    {
        let machines = self.inner.clone();
        let name = name.to_owned();
        let turn = machines.lock_of(&name);
        let lock_file = machines.dir.join(format!("{name}.lock"));
        let work = action(machines.clone(), name);
        tokio::spawn(async move {
            let _turn = turn.lock_owned().await;
            std::fs::create_dir_all(&machines.dir)
                .map_err(|e| backend(format!("cannot create {}: {e}", machines.dir.display())))?;
            let _between_tends = crate::files::exclusive(lock_file).await.map_err(backend)?;
            work.await
        })
        .await
        .map_err(|e| backend(format!("vagrant: {e}")))?
    }
}

/// The machines' folders, and how Vagrant is run on them.
struct Machines {
    dir: PathBuf,
    /// One lock per instance: its actions never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The `vagrant` found and its version; a failed lookup is not kept.
    program: tokio::sync::OnceCell<(PathBuf, String)>,
    /// The engine's client, connected once (a failed connection is not kept).
    client: tokio::sync::OnceCell<bollard::Docker>,
}

impl Machines {
    /// A client for the engine Vagrant's docker provider drives.
    async fn engine(&self) -> Result<bollard::Docker, ProviderError> {
        self.client
            .get_or_try_init(|| docker::connect(ENGINE))
            .await
            .cloned()
    }

    /// The `vagrant` on PATH and its version.
    async fn program(&self) -> Result<(PathBuf, String), ProviderError> {
        self.program
            .get_or_try_init(|| async {
                let path = crate::terraform::tool::on_path("vagrant", std::env::var_os("PATH").as_deref())
                    .ok_or_else(|| "no `vagrant` on PATH: install Debian's vagrant (apt-get install --no-install-recommends vagrant)".to_owned())?;
                let out = tokio::process::Command::new(&path)
                    .arg("--version")
                    .env("VAGRANT_CHECKPOINT_DISABLE", "1")
                    .env("VAGRANT_NO_PLUGINS", "1")
                    .output()
                    .await
                    .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
                let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                Ok::<_, String>((path, version))
            })
            .await
            .cloned()
            .map_err(backend)
    }

    fn lock_of(&self, instance: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .map(|mut l| l.entry(instance.to_owned()).or_default().clone())
            .unwrap_or_default()
    }

    /// Runs `vagrant ARGS` in instance `name`'s folder, its `docker` pointed at the engine
    /// tend observes. Called under the instance's lock.
    async fn vagrant(
        &self,
        name: &str,
        args: &[&str],
    ) -> Result<std::process::Output, ProviderError> {
        let program = self.program().await?.0;
        let home = self.dir.join(".home");
        let home = std::path::absolute(&home).unwrap_or(home);
        // Nothing else of tend's environment: a user's VAGRANT_CWD, VAGRANT_VAGRANTFILE or
        // VAGRANT_DOTFILE_PATH would point Vagrant at other machines, DOCKER_* at another
        // engine.
        let passed = PASS_THROUGH
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
        tokio::process::Command::new(&program)
            .args(args)
            .arg("--no-color")
            .current_dir(self.dir.join(name))
            .env_clear()
            .envs(passed)
            .env("VAGRANT_HOME", home)
            .env("VAGRANT_NO_PLUGINS", "1")
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("VAGRANT_DEFAULT_PROVIDER", "docker")
            .env("DOCKER_HOST", ENGINE)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| backend(format!("cannot run {}: {e}", program.display())))
            .inspect(|out| forward(name, args.first().copied().unwrap_or_default(), out))
    }

    /// The project's machines on the engine (every one with `tend.via=vagrant`).
    async fn containers(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, ProviderError> {
        let client = self.engine().await?;
        let mut filter = vec![format!("{VIA}={NAME}")];
        filter.extend(labels);
        client
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_owned(), filter)])),
                ..Default::default()
            }))
            .await
            .map_err(|e| backend(format!("cannot list containers: {e}")))
    }

    /// Removes the containers named `name` through Docker; true when there was one.
    async fn remove_container(&self, name: &str) -> Result<bool, ProviderError> {
        let client = self.engine().await?;
        let found = self.containers(Vec::new()).await?;
        let mut removed = false;
        for c in found.iter().filter(|c| container_name(c) == Some(name)) {
            let Some(id) = &c.id else { continue };
            client
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| backend(format!("cannot remove container {name}: {e}")))?;
            removed = true;
        }
        Ok(removed)
    }

    /// Writes the machine's folder: its files and its `Vagrantfile`, and its environment
    /// file in memory.
    fn prepare(
        &self,
        request: &ProvisionRequest,
        s: &Settings,
        name: &str,
    ) -> Result<(), ProviderError> {
        let folder = self.dir.join(name);
        std::fs::create_dir_all(&folder)
            .map_err(|e| backend(format!("cannot create {}: {e}", folder.display())))?;
        let folder = folder
            .canonicalize()
            .map_err(|e| backend(format!("cannot resolve {}: {e}", folder.display())))?;
        let workdir = request
            .workdir
            .clone()
            .unwrap_or_else(|| "/tend".to_owned());
        let mut volumes = Vec::new();
        if !request.files.is_empty() {
            let files = folder.join("files");
            crate::files::write_into(NAME, &files, &request.files)?;
            volumes.push(format!("{}:{workdir}:ro", files.display()));
        }
        if !request.secret_files.is_empty() {
            let secrets =
                crate::files::write_secrets(NAME, &secrets_name(name), &request.secret_files)?;
            for path in request.secret_files.keys() {
                volumes.push(format!(
                    "{}:{}/{path}:ro",
                    secrets.join(path).display(),
                    workdir.trim_end_matches('/')
                ));
            }
        }
        let mut published = s.ports.clone();
        for (_, port) in &request.tags.ports {
            if !published.iter().any(|(inside, _)| inside == port) {
                published.push((*port, 0));
            }
        }
        let ports: Vec<String> = published
            .iter()
            .map(|(inside, outside)| match outside {
                0 => format!("127.0.0.1::{inside}"),
                o => format!("127.0.0.1:{o}:{inside}"),
            })
            .collect();
        let mut labels = request.labels.clone();
        labels.extend(request.tags.to_map());
        labels.insert(VIA.to_owned(), NAME.to_owned());
        let mut run_args: Vec<String> = labels
            .iter()
            .flat_map(|(k, v)| ["--label".to_owned(), format!("{k}={v}")])
            .collect();
        run_args.extend(["--pull=never".to_owned(), "--init".to_owned()]);
        if request.workdir.is_some() || !volumes.is_empty() {
            run_args.extend(["--workdir".to_owned(), workdir.clone()]);
        }
        if let Some(r) = &request.resources {
            if let Some(m) = r.memory {
                run_args.extend([format!("--memory={m}"), format!("--memory-swap={m}")]);
            }
            if let Some(c) = r.cpu {
                run_args.push(format!("--cpus={c}"));
            }
            if let Some(p) = r.pids {
                run_args.push(format!("--pids-limit={p}"));
            }
        }
        // The environment goes to `docker run` as a file in memory, read once when the
        // container is made: never in the Vagrantfile or on a command line.
        if !request.env.is_empty() {
            let file = environment_file(&request.env)?;
            let written = crate::files::write_secrets(
                NAME,
                &environment_name(name),
                &[("environment".to_owned(), file)].into(),
            )?;
            run_args.push(format!(
                "--env-file={}",
                written.join("environment").display()
            ));
        }
        let text = vagrantfile::render(&vagrantfile::Machine {
            name,
            image: &s.image,
            command: &request.command,
            ports: &ports,
            volumes: &volumes,
            run_args: &run_args,
            stop_timeout: (request.stop_timeout.to_std().as_secs()).max(1),
        });
        std::fs::write(folder.join("Vagrantfile"), text).map_err(|e| {
            backend(format!(
                "cannot write {}/Vagrantfile: {e}",
                folder.display()
            ))
        })?;
        Ok(())
    }

    /// Removes what a machine left on this side: its folder, its secret files, its
    /// environment file and its lock file.
    fn forget(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(name));
        crate::files::remove_secrets(&secrets_name(name));
        crate::files::remove_secrets(&environment_name(name));
        // Held by the caller; one waiting on it finds the machine gone and makes or
        // removes nothing of another's.
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.lock")));
    }

    async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
        let client = self.engine().await?;
        match client.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                Err(backend(format!(
                    "image {image} is not on the Docker engine, and tend never pulls one: build or load it first (docker build -t {image} ...)"
                )))
            }
            Err(e) => Err(backend(format!("cannot inspect image {image}: {e}"))),
        }
    }

    /// Makes machine `name` for `request`, or finds it made under the same key.
    async fn make(
        &self,
        request: ProvisionRequest,
        s: Settings,
        name: String,
    ) -> Result<String, ProviderError> {
        if let Some(key) = request.labels.get(tags::KEY) {
            let made = self
                .containers(vec![
                    format!("{}={}", tags::PROJECT, request.tags.project),
                    format!("{}={key}", tags::KEY),
                ])
                .await?;
            if let Some(found) = made.iter().filter_map(container_name).next() {
                return Ok(found.to_owned());
            }
        }
        self.ensure_image(&s.image).await?;
        // Vagrant itself first: nothing is written for a machine that cannot be made.
        self.program().await?;
        if let Err(e) = self.prepare(&request, &s, &name) {
            self.forget(&name);
            return Err(e);
        }
        let out = self.vagrant(&name, &["up", "--provider=docker"]).await;
        // The container has read its environment, or failed to be made.
        crate::files::remove_secrets(&environment_name(&name));
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.forget(&name);
                return Err(e);
            }
        };
        if out.status.success() {
            return Ok(name);
        }
        // Never leave half a machine: remove what `docker run` may have made.
        let _ = self.remove_container(&name).await;
        self.forget(&name);
        Err(backend(format!(
            "`vagrant up` of {name} (image {}) failed: {}",
            s.image,
            tail(&out)
        )))
    }

    /// Removes machine `id`: by Vagrant while its folder is there, by Docker when Vagrant
    /// no longer knows it.
    async fn remove(&self, id: &str) -> Result<(), ProviderError> {
        let folder = self.dir.join(id);
        let mut existed = false;
        if folder.join("Vagrantfile").is_file() {
            existed = true;
            let out = self.vagrant(id, &["destroy", "-f"]).await?;
            if !out.status.success() {
                return Err(backend(format!(
                    "`vagrant destroy -f` of {id} failed: {}",
                    tail(&out)
                )));
            }
        }
        existed |= self.remove_container(id).await?;
        existed |= folder.exists();
        self.forget(id);
        if existed {
            Ok(())
        } else {
            Err(ProviderError::NotFound {
                provider: NAME.to_owned(),
                id: id.to_owned(),
            })
        }
    }
}

fn container_name(c: &bollard::models::ContainerSummary) -> Option<&str> {
    c.names.as_ref()?.first().map(|n| n.trim_start_matches('/'))
}

#[async_trait]
impl Provider for VagrantProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, Value>) -> Result<(), ProviderError> {
        // Ports may be templates rendered per instance: their shape is checked when
        // provisioning.
        let mut shape = props.clone();
        shape.remove("ports");
        settings(&shape).map(|_| ())
    }

    fn publishes_ports(&self) -> bool {
        true
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        let s = settings(&request.props)?;
        let name = instance_name(&request);
        self.on_instance(&name, move |machines, name| async move {
            machines.make(request, s, name).await
        })
        .await
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        self.on_instance(id, |machines, id| async move { machines.remove(&id).await })
            .await
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let found = self
            .inner
            .containers(vec![format!("{}={}", tags::PROJECT, selector.project)])
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let name = container_name(&c)?.to_owned();
                let mut instance = docker::observed(c)?;
                instance.id = name;
                if !self
                    .inner
                    .dir
                    .join(&instance.id)
                    .join("Vagrantfile")
                    .is_file()
                {
                    // An orphan: Vagrant can no longer remove it; the next plan reaps it.
                    instance.remains = u32::from(instance.state.is_live());
                    instance.state = InstanceState::Dead;
                    instance.ended = Some("orphaned: its Vagrant folder is gone".to_owned());
                }
                Some(instance)
            })
            .collect())
    }

    async fn has_remains(&self, id: &str) -> Result<bool, ProviderError> {
        Ok(self
            .inner
            .containers(Vec::new())
            .await?
            .iter()
            .any(|c| container_name(c) == Some(id) && docker::is_running(c)))
    }

    async fn about(&self) -> Option<String> {
        Some(match self.inner.program().await {
            Ok((path, version)) => format!("{} ({version})", path.display()),
            Err(e) => e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_file_holds_values_as_written_and_refuses_line_breaks() {
        let env: BTreeMap<String, String> =
            [("A".to_owned(), "it's \"${x}\" = 1".to_owned())].into();
        assert_eq!(
            environment_file(&env).ok(),
            Some("A=it's \"${x}\" = 1\n".to_owned())
        );
        let broken: BTreeMap<String, String> = [("B".to_owned(), "two\nlines".to_owned())].into();
        let e = environment_file(&broken)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("B holds a line break"), "{e}");
    }

    #[test]
    fn an_error_quotes_the_engine_else_the_first_lines_of_vagrants() {
        use std::os::unix::process::ExitStatusExt;
        let out = |stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(256),
            stdout: b"==> default: Creating the container...".to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        };
        let quoted = tail(&out("A Docker command executed by Vagrant didn't complete successfully!\nCommand: [\"docker\", \"run\"]\n\nStderr: docker: Error response from daemon: No such image: x:1\n\nStdout:\n"));
        assert_eq!(
            quoted,
            "docker: Error response from daemon: No such image: x:1"
        );
        let first = tail(&out("Vagrant cannot forward the specified ports on this VM, since they\nwould collide with some other application.\nThe forwarded port to 18401 is already in use on the host machine.\n"));
        assert!(first.contains("18401 is already in use"), "{first}");
    }

    #[test]
    fn settings_need_an_image_and_numeric_ports() {
        let props =
            |v: Value| -> BTreeMap<String, Value> { serde_json::from_value(v).unwrap_or_default() };
        let s = settings(&props(
            serde_json::json!({"image": "i", "ports": {"80": 0, "81": "8081"}}),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.image.as_str(), s.ports),
            ("i", vec![(80, 0), (81, 8081)])
        );
        assert!(settings(&props(serde_json::json!({}))).is_err());
        assert!(settings(&props(serde_json::json!({"image": "i", "box": "x"}))).is_err());
    }
}
