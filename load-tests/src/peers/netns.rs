//! Network namespaces the runner makes for the servers it compares: each
//! server gets its own namespace joined to the runner's by a veth pair, so
//! every server sits behind the same kind of network path, and a server
//! that will not gather loopback candidates (Janus) still has an address.
//! Nothing leaves the machine: the pair's two ends are the only interfaces
//! on that subnet. Made with `ip` (iproute2, root); removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

/// One namespace and the veth pair into it: the runner's end has
/// `10.77.<index>.1/30`, the namespace's end `10.77.<index>.2/30`.
pub struct Namespace {
    name: String,
    host_veth: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl Namespace {
    /// Creates namespace `index` (0..=255) of this process; a stale one of
    /// the same name (a run that was killed) is removed first.
    pub fn create(index: u8) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let name = format!("lt{pid}-{index}");
        let host_veth = format!("lt{index}h{}", pid % 10_000);
        let ns_veth = format!("lt{index}n{}", pid % 10_000);
        let host_ip = Ipv4Addr::new(10, 77, index, 1);
        let ns_ip = Ipv4Addr::new(10, 77, index, 2);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]).context(
            "cannot create a network namespace (the comparison needs root and iproute2; \
             scripts/bench runs it that way)",
        )?;
        let namespace = Self {
            name,
            host_veth,
            host_ip,
            ns_ip,
        };
        let ns = namespace.name.as_str();
        let (host, inner) = (namespace.host_veth.as_str(), ns_veth.as_str());
        ip(&["link", "add", host, "type", "veth", "peer", "name", inner])?;
        ip(&["link", "set", inner, "netns", ns])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        let inside = ["netns", "exec", ns, "ip"];
        ip(&[
            &inside[..],
            &["addr", "add", &format!("{ns_ip}/30"), "dev", inner],
        ]
        .concat())?;
        ip(&[&inside[..], &["link", "set", inner, "up"]].concat())?;
        ip(&[&inside[..], &["link", "set", "lo", "up"]].concat())?;
        Ok(namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace (`ip netns exec` execs it, so
    /// the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Whatever still runs in there goes with it; the veth pair dies
        // with the namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
