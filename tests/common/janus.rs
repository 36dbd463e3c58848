//! A Janus edge for tests: Debian's `janus` (1.1.2) started with a config directory of its
//! own, only the HTTP transport and the streaming plugin loaded, its HTTP API and its ICE
//! candidates on one address, and port ranges of its own so several run side by side.
//!
//! Janus never offers loopback ICE candidates (it skips loopback interfaces), so an edge a
//! browser can reach runs in a network namespace with a real interface: the server side of a
//! [`Link`], at 198.18.0.1, which the viewer side reaches over the veth pair.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cowatch::tools::netns::{Link, Side};

/// Where Debian's package puts the plugins.
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
/// Debian's binary.
pub const JANUS: &str = "/usr/bin/janus";

/// One running Janus.
pub struct Edge {
    child: Option<Child>,
    /// Its HTTP API base.
    pub url: String,
    dir: PathBuf,
}

/// Every plugin, transport, logger and event handler Debian ships but the edge must not load.
const OTHER_PLUGINS: &str = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
    libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,\
    libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so";
const OTHER_TRANSPORTS: &str = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,\
    libjanus_rabbitmq.so,libjanus_websockets.so";
const EVENT_HANDLERS: &str = "libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so,\
    libjanus_rabbitmqevh.so,libjanus_sampleevh.so,libjanus_wsevh.so";

impl Edge {
    /// Writes edge number `n`'s configuration into `dir` and starts it inside `side` of
    /// `link`, its API on `ip:port`, ICE and RTP on ports of its own (`n` picks them), the
    /// streaming plugin's `admin_key` = `secret`. Waits until the API answers.
    pub fn start(link: &Link, side: Side, n: u16, port: u16, secret: &str, dir: &Path) -> Edge {
        assert!(
            Path::new(JANUS).exists(),
            "{JANUS} is missing: apt-get install janus (.ci/deps does)"
        );
        let ip = side.ip();
        std::fs::create_dir_all(dir).unwrap();
        let ice = 30_000 + 200 * n;
        let rtp = ice + 100;
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write(
            "janus.jcfg",
            format!(
                r#"general: {{
	configs_folder = "{dir}"
	plugins_folder = "{LIB}/plugins"
	transports_folder = "{LIB}/transports"
	events_folder = "{LIB}/events"
	loggers_folder = "{LIB}/loggers"
	debug_level = 4
	interface = "{ip}"
	session_timeout = 60
}}
media: {{
	ipv6 = false
	rtp_port_range = "{ice}-{ice_end}"
}}
nat: {{
	ice_enforce_list = "{ip}"
}}
plugins: {{
	disable = "{OTHER_PLUGINS}"
}}
transports: {{
	disable = "{OTHER_TRANSPORTS}"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
	disable = "{EVENT_HANDLERS}"
}}
"#,
                dir = dir.display(),
                ice_end = ice + 99,
            ),
        );
        write(
            "janus.transport.http.jcfg",
            format!(
                r#"general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "{ip}"
	https = false
}}
admin: {{
	admin_http = false
}}
"#
            ),
        );
        write(
            "janus.plugin.streaming.jcfg",
            format!(
                r#"general: {{
	admin_key = "{secret}"
	rtp_port_range = "{rtp}-{rtp_end}"
	events = false
}}
"#,
                rtp_end = rtp + 99,
            ),
        );
        let log = File::create(dir.join("janus.log")).unwrap();
        let child = link
            .command(side, JANUS)
            .arg("-F")
            .arg(dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start janus");
        let mut edge = Edge {
            child: Some(child),
            url: format!("http://{ip}:{port}/janus"),
            dir: dir.to_owned(),
        };
        edge.wait_until_up(link, side, ip, port);
        edge
    }

    fn wait_until_up(&mut self, link: &Link, side: Side, ip: Ipv4Addr, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if link.connect(side, SocketAddr::from((ip, port))).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("janus exited ({status}) at start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("janus's API did not answer within 20 s:\n{}", self.log());
    }

    /// Kills it, as a crashed or unplugged edge would go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it logged (the last 4 kB), for failure messages.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.dir.join("janus.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let cut = text.len().saturating_sub(4096);
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[cut..].to_owned()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
