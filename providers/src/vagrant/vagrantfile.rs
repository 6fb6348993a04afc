//! The `Vagrantfile` of one instance: Vagrant's docker provider with a local image (never
//! pulled), SSH and the synced folder off, tags as container labels set at creation.
//! The environment is not in it: `docker run` reads it from a file in memory
//! (`--env-file` among the run arguments), so a secret never lands on disk.

/// `text` as a single-quoted Ruby string.
pub fn ruby(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

fn ruby_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|i| ruby(i)).collect::<Vec<_>>().join(", ")
    )
}

/// One instance's machine.
pub struct Machine<'a> {
    /// The container's name (also the instance's id and folder).
    pub name: &'a str,
    /// The image, which must be on the engine.
    pub image: &'a str,
    /// The command, empty for the image's own.
    pub command: &'a [String],
    /// `-p` values: `127.0.0.1:HOST:CONTAINER`, HOST empty for one the engine picks.
    pub ports: &'a [String],
    /// `-v` values.
    pub volumes: &'a [String],
    /// `docker run` arguments: labels, working folder, limits.
    pub run_args: &'a [String],
    /// Seconds a stop may take.
    pub stop_timeout: u64,
}

/// The `Vagrantfile` text.
pub fn render(m: &Machine<'_>) -> String {
    let cmd = if m.command.is_empty() {
        String::new()
    } else {
        format!("    d.cmd = {}\n", ruby_list(m.command))
    };
    format!(
        r#"# Made by tend for instance {name}: tend runs `vagrant up --provider=docker` and
# `vagrant destroy -f` here, and finds the container by its labels.
Vagrant.configure("2") do |config|
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.network :forwarded_port, guest: 22, host: 2222, id: "ssh", disabled: true
  config.vm.provider "docker" do |d|
    d.image = {image}
    d.name = {quoted_name}
{cmd}    d.ports = {ports}
    d.volumes = {volumes}
    d.create_args = {run_args}
    d.has_ssh = false
    d.remains_running = true
    d.pull = false
    d.stop_timeout = {stop}
  end
end
"#,
        name = m.name,
        image = ruby(m.image),
        quoted_name = ruby(m.name),
        ports = ruby_list(m.ports),
        volumes = ruby_list(m.volumes),
        run_args = ruby_list(m.run_args),
        stop = m.stop_timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_strings_keep_quotes_and_backslashes() {
        assert_eq!(ruby(r"it's a \ path"), r"'it\'s a \\ path'");
    }

    #[test]
    fn never_pulled_and_without_ssh() {
        let text = render(&Machine {
            name: "tend-p-web-0-abc",
            image: "tend-busybox:test",
            command: &["httpd".into(), "-f".into()],
            ports: &["127.0.0.1::80".into()],
            volumes: &[],
            run_args: &[
                "--label".into(),
                "tend.project=p".into(),
                "--pull=never".into(),
            ],
            stop_timeout: 2,
        });
        assert!(text.contains("d.cmd = ['httpd', '-f']"), "{text}");
        assert!(text.contains("d.pull = false") && text.contains("d.has_ssh = false"));
        assert!(text.contains("'--pull=never'"));
    }
}
