//! A network path a test can cut: a TCP proxy (HTTP, WebSocket) and a UDP
//! relay (WebRTC media, one upstream socket per client, as a NAT keeps
//! them) between the clients and an engine. Cutting it drops what is in
//! flight and refuses what comes next, as a vanished network would, until
//! it heals.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

pub struct FlakyPath {
    /// `http://…` of the proxy: pages opened there reach the engine
    /// through it.
    pub http_base: String,
    /// Where media goes: the engine advertises it as its candidate
    /// (`media_advertised_addr`).
    pub media_addr: SocketAddr,
    listener: Option<TcpListener>,
    front: Option<UdpSocket>,
    state: Arc<PathState>,
}

#[derive(Default)]
struct PathState {
    /// While cut: the media clients still let through.
    spared: Mutex<Option<HashSet<SocketAddr>>>,
    /// Media clients in the order they were first heard.
    clients: Mutex<Vec<SocketAddr>>,
    /// Bumped on every cut: open TCP connections end.
    cuts: watch::Sender<u64>,
}

impl PathState {
    fn passes(&self, client: SocketAddr) -> bool {
        self.spared
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|spared| spared.contains(&client))
    }
}

impl FlakyPath {
    /// Binds the proxy's ports; the engine's addresses come to
    /// [`FlakyPath::start`] once it runs (it must advertise `media_addr`).
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self {
            http_base: format!("http://{}", listener.local_addr().unwrap()),
            media_addr: front.local_addr().unwrap(),
            listener: Some(listener),
            front: Some(front),
            state: Arc::default(),
        }
    }

    pub fn start(&mut self, engine_http: SocketAddr, engine_media: SocketAddr) {
        let listener = self.listener.take().expect("started once");
        tokio::spawn(proxy_tcp(listener, engine_http, self.state.clone()));
        let front = Arc::new(self.front.take().expect("started once"));
        tokio::spawn(relay_udp(front, engine_media, self.state.clone()));
    }

    /// The media clients heard so far.
    pub fn media_clients(&self) -> Vec<SocketAddr> {
        self.state.clients.lock().unwrap().clone()
    }

    /// Cuts the path for everyone but the media clients in `spared`: open
    /// connections end, new ones are closed at once, datagrams are dropped.
    pub fn cut(&self, spared: &[SocketAddr]) {
        *self.state.spared.lock().unwrap() = Some(spared.iter().copied().collect());
        self.state.cuts.send_modify(|cuts| *cuts += 1);
    }

    pub fn heal(&self) {
        *self.state.spared.lock().unwrap() = None;
    }
}

async fn proxy_tcp(listener: TcpListener, engine: SocketAddr, state: Arc<PathState>) {
    while let Ok((mut client, _)) = listener.accept().await {
        if state.spared.lock().unwrap().is_some() {
            continue; // dropped: the client sees its connection close
        }
        let mut cuts = state.cuts.subscribe();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(engine).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

async fn relay_udp(front: Arc<UdpSocket>, engine: SocketAddr, state: Arc<PathState>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    while let Ok((len, client)) = front.recv_from(&mut buf).await {
        let upstream = match upstreams.get(&client) {
            Some(upstream) => upstream.clone(),
            None => {
                let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                upstream.connect(engine).await.unwrap();
                state.clients.lock().unwrap().push(client);
                tokio::spawn(relay_back(
                    upstream.clone(),
                    front.clone(),
                    client,
                    state.clone(),
                ));
                upstreams.insert(client, upstream.clone());
                upstream
            }
        };
        if state.passes(client) {
            let _ = upstream.send(&buf[..len]).await;
        }
    }
}

async fn relay_back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    state: Arc<PathState>,
) {
    let mut buf = vec![0u8; 2048];
    while let Ok(len) = upstream.recv(&mut buf).await {
        if state.passes(client) {
            let _ = front.send_to(&buf[..len], client).await;
        }
    }
}
