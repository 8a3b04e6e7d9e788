//! The sans-IO router: peers, streams and forwarding.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::error::SfuError;
use crate::layer::{LayerChoice, Layers};
use crate::peer::{Peer, PeerId, Role};
use crate::rendition::{AutoFeed, Feed, FeedState, RenditionLayer, StreamMedia, pick_feed};

/// Where a subscriber's bandwidth estimate starts.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1500);

/// At most one keyframe request per publisher layer in this long. Each
/// keyframe costs the publisher several frames' worth of bits, so joins
/// and losses that come together share one; but every viewer that joins
/// waits for the next one, so the window is what a join waits at worst.
/// At 500 ms, viewers joining one after another waited ~500 ms each
/// (`load-tests join`); at 250 ms a stream pays at most four extra
/// keyframes a second in a flash crowd.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// How often each peer reports its media counters.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `room/stream`: what a publisher publishes and subscribers watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub room: String,
    pub stream: String,
}

impl StreamKey {
    pub fn new(room: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            stream: stream.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The address peers send media to: the UDP socket's address, or the
    /// advertised public address in front of it.
    pub host_candidate: SocketAddr,
    /// At most one keyframe request per publisher track in this interval.
    pub keyframe_interval: Duration,
    /// Peers (publishers and subscribers) this router serves at once.
    pub max_peers: usize,
    /// Subscribers of one stream at once.
    pub max_subscribers_per_stream: usize,
}

impl RouterConfig {
    pub fn new(host_candidate: SocketAddr) -> Self {
        Self {
            host_candidate,
            keyframe_interval: KEYFRAME_REQUEST_INTERVAL,
            max_peers: 5000,
            max_subscribers_per_stream: 2000,
        }
    }
}

/// A datagram for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// A live stream as listed by `GET /v1/rooms/{room}/streams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub stream: String,
    /// The publisher completed ICE and DTLS.
    pub connected: bool,
    pub tracks: Vec<MediaKind>,
    pub subscribers: usize,
    /// The user whose token published it (filled in by the media plane,
    /// which knows the sessions' owners; empty from the router alone).
    pub publisher: String,
}

/// Cumulative media counters of one track of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    pub peer: PeerId,
    pub role: Role,
    pub stream: StreamKey,
    pub kind: MediaKind,
    pub bytes: u64,
    pub packets: u64,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Fraction lost in the last report, when known.
    pub loss: Option<f32>,
}

/// A publisher's frame copied for its stream's transcoder.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestFrame {
    pub stream: StreamKey,
    pub kind: MediaKind,
    pub codec: Codec,
    /// Shared with the frame the subscribers got: no copy.
    pub data: std::sync::Arc<[u8]>,
    pub keyframe: bool,
    /// RTP time in the codec's clock (90 kHz video, 48 kHz Opus).
    pub time: u64,
    pub received: Instant,
    /// False when packets of it (or before it) were lost: it may not
    /// decode cleanly, and what follows may refer to what is missing.
    pub contiguous: bool,
}

/// A frame of a stream the engine publishes itself (a room's program):
/// H.264 (Annex B, 90 kHz) or Opus (48 kHz).
#[derive(Debug, Clone)]
pub struct LocalFrame {
    pub stream: StreamKey,
    /// The program that made it ([`Router::publish_local`]): frames of a
    /// program that was replaced are dropped.
    pub source: PeerId,
    pub kind: MediaKind,
    pub data: std::sync::Arc<[u8]>,
    pub keyframe: bool,
    /// On the stream's own timeline, in the codec's clock.
    pub time: u64,
}

/// What the router tells its owner (the actors, through the run loop).
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// ICE and DTLS completed: media can flow.
    Connected {
        peer: PeerId,
        role: Role,
        stream: StreamKey,
        /// The peer's media lines.
        tracks: Vec<MediaKind>,
    },
    /// A peer's cumulative counters for one track, every second. Ingress
    /// for a publisher, egress for a subscriber.
    Stats(TrackStats),
    /// A publisher's frame was written to its subscribers; `received` is
    /// when its packets arrived (str0m's network time for the frame). The
    /// media thread turns it into the receive -> sent latency once the
    /// copies are on the socket (one sample per frame, not per subscriber).
    Forwarded { received: Instant },
    /// A frame of a tapped stream, for its transcoder (one per frame, to
    /// the media thread's tap; never to an actor).
    Ingest(IngestFrame),
    /// A subscriber switches to a rendition of the stream: its transcoder
    /// should make a keyframe.
    RenditionKeyframeWanted(StreamKey),
    /// A viewer of a local stream (a program) needs a keyframe: joined, or
    /// lost a picture. Its program answers when it can.
    LocalKeyframeWanted(StreamKey),
    /// The peer is gone: removed, timed out or closed by the other side.
    /// Subscribers of a publisher that left get one each.
    Closed {
        peer: PeerId,
        role: Role,
        stream: StreamKey,
    },
}

pub struct Router {
    config: RouterConfig,
    peers: HashMap<PeerId, Peer>,
    publishers: HashMap<StreamKey, PeerId>,
    /// Streams the engine itself publishes (a room's program): no WebRTC
    /// publisher; the media thread pushes their frames
    /// ([`Self::push_local`]). The id tells one program from the next on
    /// the same stream.
    locals: HashMap<StreamKey, PeerId>,
    /// Streams whose frames are copied out ([`SfuEvent::Ingest`]) for a
    /// program showing them, whether or not they are live now: a program
    /// that waits for a stream gets it when its publisher connects.
    copied: HashSet<StreamKey>,
    subscribers: HashMap<StreamKey, Vec<PeerId>>,
    /// Taps and renditions of transcoded streams.
    media: HashMap<StreamKey, StreamMedia>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    /// Peers whose outputs must be polled before the router is idle.
    dirty: Vec<PeerId>,
    /// Datagrams no peer accepted (noise on the media port).
    pub ignored_datagrams: u64,
    /// Removed peers still sending their goodbye (RTCP BYE, DTLS
    /// close_notify), so the remote ends at once instead of timing out;
    /// dropped when done or at the deadline, whichever comes first.
    closing: Vec<Closing>,
    /// One DTLS certificate for every peer of this router, made once:
    /// generating a key pair per peer would stall the media thread on each
    /// join. Peers tell connections apart by ICE credentials, not by
    /// certificate (one certificate per process is what Janus and
    /// mediasoup's workers do too).
    dtls_cert: DtlsCert,
}

struct Closing {
    rtc: Rtc,
    timeout: Instant,
    deadline: Instant,
}

/// How long a removed peer may take to send its goodbye.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        crate::install_crypto();
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the rust-crypto provider generates DTLS certificates");
        Self {
            config,
            peers: HashMap::new(),
            publishers: HashMap::new(),
            locals: HashMap::new(),
            copied: HashSet::new(),
            subscribers: HashMap::new(),
            media: HashMap::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
            ignored_datagrams: 0,
            closing: Vec::new(),
            dtls_cert,
        }
    }

    /// The address peers send media to (the ICE host candidate).
    pub fn host_candidate(&self) -> SocketAddr {
        self.config.host_candidate
    }

    /// Accepts a publisher's offer for `stream` (WHIP); returns its id and
    /// the SDP answer.
    pub fn publish(
        &mut self,
        stream: StreamKey,
        offer: &str,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        if self.is_live(&stream) {
            return Err(SfuError::StreamLive);
        }
        let (id, answer) = self.add_peer(Role::Publisher, stream.clone(), offer, now)?;
        self.publishers.insert(stream, id);
        Ok((id, answer))
    }

    /// Accepts a subscriber's offer for a live `stream` (WHEP).
    pub fn subscribe(
        &mut self,
        stream: StreamKey,
        offer: &str,
        layer: LayerChoice,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        if !self.is_live(&stream) {
            return Err(SfuError::StreamNotLive);
        }
        if self.subscriber_count(&stream) >= self.config.max_subscribers_per_stream {
            return Err(SfuError::Full(
                "this stream has as many viewers as it may have",
            ));
        }
        let (id, answer) = self.add_peer(Role::Subscriber, stream.clone(), offer, now)?;
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.layer = layer;
            if self.locals.contains_key(&stream) && peer.h264_pt().is_none() {
                // A program is H.264 whatever its clips' source was.
                self.peers.remove(&id);
                return Err(SfuError::NeedsH264);
            }
        }
        self.subscribers.entry(stream).or_default().push(id);
        Ok((id, answer))
    }

    fn add_peer(
        &mut self,
        role: Role,
        stream: StreamKey,
        offer: &str,
        now: Instant,
    ) -> Result<(PeerId, String), SfuError> {
        if self.peers.len() >= self.config.max_peers {
            return Err(SfuError::Full(
                "this node serves as many media peers as it may",
            ));
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .set_dtls_cert(self.dtls_cert.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            // Subscribers get a send-side bandwidth estimate (TWCC) for
            // the `auto` layer choice.
            .enable_bwe((role == Role::Subscriber).then_some(INITIAL_ESTIMATE))
            .build(now);
        let candidate = Candidate::host(self.config.host_candidate, "udp")
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        let answer = answer.to_sdp_string();
        let lines = media_lines(&answer);
        if lines.is_empty() {
            return Err(SfuError::NoMedia);
        }
        if lines.iter().all(|line| !line.accepted) {
            return Err(SfuError::NoCodec);
        }
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let tracks: Vec<(Mid, MediaKind)> = lines
            .iter()
            .filter(|l| l.accepted)
            .map(|l| (Mid::from(l.mid.as_str()), l.kind))
            .collect();
        let peer = Peer {
            id,
            role,
            stream,
            rtc,
            tracks,
            timeout: now,
            connected: false,
            last_keyframe_request: Vec::new(),
            pending_keyframe: Vec::new(),
            layers: Layers::default(),
            layer_bytes: Vec::new(),
            layer: LayerChoice::default(),
            current_rid: None,
            feed: FeedState::default(),
            auto: AutoFeed::default(),
            rendition_pt: None,
            opus_pt: None,
            estimate_bps: None,
            source_bytes: None,
            source_bps: None,
        };
        self.peers.insert(id, peer);
        self.dirty.push(id);
        self.drive(now);
        Ok((id, answer))
    }

    /// Removes a peer (WHEP/WHIP `DELETE`). A publisher takes its
    /// subscribers with it.
    pub fn remove(&mut self, id: PeerId, now: Instant) -> Result<(), SfuError> {
        let peer = self.peers.get(&id).ok_or(SfuError::UnknownPeer)?;
        let (role, stream) = (peer.role, peer.stream.clone());
        self.close(id, now);
        if role == Role::Publisher {
            for sub in self.subscribers.remove(&stream).unwrap_or_default() {
                self.close(sub, now);
            }
        }
        self.drive(now);
        Ok(())
    }

    fn close(&mut self, id: PeerId, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if peer.rtc.is_alive() && peer.rtc.close().is_ok() {
            self.closing.push(Closing {
                rtc: peer.rtc,
                timeout: now,
                deadline: now + CLOSE_DRAIN,
            });
        }
        match peer.role {
            Role::Publisher => {
                self.publishers.remove(&peer.stream);
                self.media.remove(&peer.stream);
            }
            Role::Subscriber => {
                if let Some(subs) = self.subscribers.get_mut(&peer.stream) {
                    subs.retain(|s| *s != id);
                }
            }
        }
        self.events.push_back(SfuEvent::Closed {
            peer: id,
            role: peer.role,
            stream: peer.stream,
        });
    }

    /// Feeds one datagram from the socket. Returns false when no peer
    /// accepted it (counted in `ignored_datagrams`).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        let Ok(contents) = contents.try_into() else {
            self.ignored_datagrams += 1;
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let Some(peer) = self.peers.values_mut().find(|p| p.rtc.accepts(&input)) else {
            self.ignored_datagrams += 1;
            return false;
        };
        let id = peer.id;
        if let Err(error) = peer.rtc.handle_input(input) {
            tracing::debug!(%id, %error, "peer rejected a datagram");
        }
        self.dirty.push(id);
        self.drive(now);
        true
    }

    /// Lets time pass: every peer whose timeout is due runs its timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            if peer.timeout <= now {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
                self.dirty.push(peer.id);
            }
        }
        for closing in &mut self.closing {
            if closing.timeout <= now {
                let _ = closing.rtc.handle_input(Input::Timeout(now));
            }
        }
        self.send_held_keyframe_requests(now);
        self.drive(now);
    }

    /// Sends the keyframe requests the throttle held, once it allows.
    fn send_held_keyframe_requests(&mut self, now: Instant) {
        let due: Vec<(StreamKey, Option<Rid>, KeyframeRequestKind)> = self
            .peers
            .values()
            .filter(|peer| self.keyframe_request_due(peer).is_some_and(|at| at <= now))
            .flat_map(|peer| {
                peer.pending_keyframe
                    .iter()
                    .map(|(_, rid, kind)| (peer.stream.clone(), *rid, *kind))
            })
            .collect();
        for (stream, rid, kind) in due {
            self.request_keyframe(&stream, kind, rid, now);
        }
    }

    /// When a publisher's earliest held keyframe request may go out.
    fn keyframe_request_due(&self, peer: &Peer) -> Option<Instant> {
        peer.pending_keyframe
            .iter()
            .filter_map(|(mid, rid, _)| {
                peer.last_keyframe_request
                    .iter()
                    .find(|(m, r, _)| m == mid && r == rid)
                    .map(|(_, _, at)| *at + self.config.keyframe_interval)
            })
            .min()
    }

    /// When the router next needs [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().map(|p| {
            self.keyframe_request_due(p)
                .map_or(p.timeout, |due| due.min(p.timeout))
        });
        let closing = self.closing.iter().map(|c| c.timeout.min(c.deadline));
        peers.chain(closing).min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    pub fn is_live(&self, stream: &StreamKey) -> bool {
        self.publishers.contains_key(stream) || self.locals.contains_key(stream)
    }

    /// The live streams of a room, by name.
    pub fn streams_in(&self, room: &str) -> Vec<StreamInfo> {
        let mut streams: Vec<StreamInfo> = self
            .publishers
            .iter()
            .filter(|(key, _)| key.room == room)
            .filter_map(|(key, id)| {
                let publisher = self.peers.get(id)?;
                Some(StreamInfo {
                    stream: key.stream.clone(),
                    connected: publisher.connected,
                    tracks: publisher.tracks.iter().map(|(_, kind)| *kind).collect(),
                    subscribers: self.subscriber_count(key),
                    publisher: String::new(),
                })
            })
            .collect();
        streams.extend(
            self.locals
                .keys()
                .filter(|key| key.room == room)
                .map(|key| StreamInfo {
                    stream: key.stream.clone(),
                    connected: true,
                    tracks: vec![MediaKind::Audio, MediaKind::Video],
                    subscribers: self.subscriber_count(key),
                    publisher: String::new(),
                }),
        );
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        streams
    }

    pub fn subscriber_count(&self, stream: &StreamKey) -> usize {
        self.subscribers.get(stream).map_or(0, Vec::len)
    }

    /// Polls every dirty peer until it only has a timeout left; forwarding
    /// makes subscribers dirty in turn.
    fn drive(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            while let Some(peer) = self.peers.get_mut(&id) {
                if !peer.rtc.is_alive() {
                    self.close(id, now);
                    break;
                }
                let output = match peer.rtc.poll_output() {
                    Ok(output) => output,
                    Err(error) => {
                        tracing::debug!(%id, %error, "peer failed");
                        self.close(id, now);
                        break;
                    }
                };
                match output {
                    Output::Timeout(at) => {
                        peer.timeout = at;
                        break;
                    }
                    Output::Transmit(t) => self.transmits.push_back(Transmit {
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    }),
                    Output::Event(event) => self.on_event(id, event, now),
                }
            }
        }
        self.drain_closing(now);
    }

    /// Sends what removed peers still have to say; forgets those done.
    fn drain_closing(&mut self, now: Instant) {
        let transmits = &mut self.transmits;
        self.closing.retain_mut(|closing| {
            while closing.rtc.is_alive() && now < closing.deadline {
                match closing.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => transmits.push_back(Transmit {
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    }),
                    Ok(Output::Timeout(at)) => {
                        closing.timeout = at;
                        return true;
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => return false,
                }
            }
            false
        });
    }

    fn on_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                peer.connected = true;
                let (role, stream) = (peer.role, peer.stream.clone());
                let tracks = peer.tracks.iter().map(|(_, kind)| *kind).collect();
                self.events.push_back(SfuEvent::Connected {
                    peer: id,
                    role,
                    stream: stream.clone(),
                    tracks,
                });
                if role == Role::Subscriber {
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.rendition_pt = peer.h264_pt();
                        peer.opus_pt = peer.opus_pt();
                    }
                    // A viewer joining mid-stream needs a keyframe now.
                    match self.target_feed(id) {
                        Some(Feed::Rendition(_)) => self
                            .events
                            .push_back(SfuEvent::RenditionKeyframeWanted(stream)),
                        _ => {
                            let rid = self.target_rid(id);
                            self.request_keyframe(&stream, KeyframeRequestKind::Pli, rid, now);
                        }
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let _ = self.remove(id, now);
            }
            Event::MediaData(data) => self.forward(id, data, now),
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
            ) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.estimate_bps = Some(estimate.as_u64());
                }
                self.follow_estimate(id, estimate.as_u64(), now);
            }
            Event::MediaIngressStats(s) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    match s.rid {
                        Some(rid) => peer.measure_layer(rid, s.bytes, s.timestamp),
                        None if peer.kind_of(s.mid) == Some(MediaKind::Video) => {
                            peer.measure_source(s.bytes, s.timestamp)
                        }
                        None => {}
                    }
                }
                let counters = (s.bytes, s.packets, s.nacks, s.plis, s.firs, s.loss);
                self.report(id, s.mid, counters);
            }
            Event::MediaEgressStats(s) => {
                let counters = (s.bytes, s.packets, s.nacks, s.plis, s.firs, s.loss);
                self.report(id, s.mid, counters);
            }
            Event::KeyframeRequest(request) => {
                let Some(peer) = self.peers.get(&id) else {
                    return;
                };
                let stream = peer.stream.clone();
                if let Some(Feed::Rendition(_)) = peer.feed.current {
                    // The viewer's picture comes from the transcoder.
                    self.events
                        .push_back(SfuEvent::RenditionKeyframeWanted(stream));
                } else {
                    let rid = peer.current_rid;
                    self.request_keyframe(&stream, request.kind, rid, now);
                }
            }
            _ => {}
        }
    }

    fn report(
        &mut self,
        id: PeerId,
        mid: Mid,
        (bytes, packets, nacks, plis, firs, loss): (u64, u64, u64, u64, u64, Option<f32>),
    ) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(kind) = peer.kind_of(mid) else {
            return;
        };
        self.events.push_back(SfuEvent::Stats(TrackStats {
            peer: id,
            role: peer.role,
            stream: peer.stream.clone(),
            kind,
            bytes,
            packets,
            nacks,
            plis,
            firs,
            loss,
        }));
    }

    /// Writes a publisher's frame to every connected subscriber's track of
    /// the same kind, in the codec the subscriber negotiated.
    fn forward(&mut self, publisher: PeerId, data: MediaData, now: Instant) {
        let Some(peer) = self.peers.get(&publisher) else {
            return;
        };
        if peer.role != Role::Publisher {
            return;
        }
        let Some(kind) = peer.kind_of(data.mid) else {
            return;
        };
        let stream = peer.stream.clone();
        // Simulcast frames: rank the layers once per frame, not per subscriber.
        let (ranked, publisher_layers) = match (data.rid, self.peers.get_mut(&publisher)) {
            (Some(rid), Some(peer)) => {
                peer.layers.observe(rid);
                (peer.layers.ranked(), Some(peer.layers.clone()))
            }
            _ => (Vec::new(), None),
        };
        self.tap(&stream, kind, &data, ranked.first(), now);
        if !data.contiguous && kind == MediaKind::Video {
            self.request_keyframe(&stream, KeyframeRequestKind::Fir, data.rid, now);
        } else if kind == MediaKind::Video && data.is_keyframe() {
            // Whoever was waiting for a held request gets this keyframe.
            if let Some(peer) = self.peers.get_mut(&publisher) {
                peer.pending_keyframe
                    .retain(|(m, r, _)| !(*m == data.mid && *r == data.rid));
            }
        }
        let subscribers = self.subscribers.get(&stream).cloned().unwrap_or_default();
        if !subscribers.is_empty() {
            self.events.push_back(SfuEvent::Forwarded {
                received: data.network_time,
            });
        }
        // Looked up once per frame, not per subscriber.
        let media = self.media.get(&stream);
        for sub in subscribers {
            let Some(peer) = self.peers.get_mut(&sub) else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            let Some(mid) = peer.track_of_kind(kind) else {
                continue;
            };
            if let Some(rid) = data.rid {
                // Simulcast: one layer per subscriber, switched on a keyframe.
                let target = match (peer.layer, peer.estimate_bps, &publisher_layers) {
                    (LayerChoice::Auto, Some(estimate), Some(layers)) => {
                        layers.pick_for_bandwidth(estimate)
                    }
                    _ => Layers::pick_in(&ranked, peer.layer),
                };
                let switch =
                    Some(rid) == target && peer.current_rid != target && data.is_keyframe();
                if switch {
                    peer.current_rid = target;
                }
                if peer.current_rid != Some(rid) {
                    continue;
                }
            } else if kind == MediaKind::Video {
                // A joining viewer starts on a keyframe (requested when it
                // connected); delta frames before it would not decode. A
                // viewer on a rendition skips the source.
                let target = feed_target(media, peer);
                if !peer
                    .feed
                    .admit(Feed::Source, target, data.is_keyframe(), data.time.numer())
                {
                    continue;
                }
            }
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            if let Err(error) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
                tracing::debug!(peer = %sub, %error, "write to subscriber failed");
            }
            self.dirty.push(sub);
        }
    }

    /// Copies a publisher's frame for the stream's transcoder, if tapped:
    /// the single layer, or one simulcast layer, which moves to the best
    /// layer only on a keyframe of it (asked for when the best changes).
    fn tap(
        &mut self,
        stream: &StreamKey,
        kind: MediaKind,
        data: &MediaData,
        best: Option<&Rid>,
        now: Instant,
    ) {
        let media = if self.copied.contains(stream) {
            self.media.entry(stream.clone()).or_default()
        } else {
            match self.media.get_mut(stream).filter(|media| media.tapped) {
                Some(media) => media,
                None => return,
            }
        };
        let keyframe = kind == MediaKind::Video && data.is_keyframe();
        if let Some(rid) = data.rid {
            let is_best = best == Some(&rid);
            if media.tapped_rid != Some(rid) {
                if !(is_best && keyframe) {
                    if is_best && kind == MediaKind::Video {
                        self.request_keyframe(stream, KeyframeRequestKind::Pli, Some(rid), now);
                    }
                    return;
                }
                media.tapped_rid = Some(rid);
            }
        }
        self.events.push_back(SfuEvent::Ingest(IngestFrame {
            stream: stream.clone(),
            kind,
            codec: data.params.spec().codec,
            data: data.data.clone(),
            keyframe,
            time: data.time.numer(),
            received: data.network_time,
            contiguous: data.contiguous,
        }));
    }

    /// Starts or stops copying a live stream's frames for a transcoder
    /// ([`SfuEvent::Ingest`]). Stopping also withdraws its renditions.
    /// A new tap asks the publisher for a keyframe: the transcoder can
    /// start on nothing else, and the next periodic one may be seconds
    /// away.
    pub fn set_tapped(
        &mut self,
        stream: &StreamKey,
        tapped: bool,
        now: Instant,
    ) -> Result<(), SfuError> {
        if !self.is_live(stream) {
            return Err(SfuError::StreamNotLive);
        }
        if tapped {
            self.media.entry(stream.clone()).or_default().tapped = true;
            self.request_source_keyframe(stream, now);
        } else if self.media.remove(stream).is_some() {
            // Viewers on a rendition go back to the source, which must
            // send them a keyframe.
            let on_rendition = self
                .subscribers
                .get(stream)
                .into_iter()
                .flatten()
                .any(|sub| {
                    self.peers
                        .get(sub)
                        .is_some_and(|p| matches!(p.feed.current, Some(Feed::Rendition(_))))
                });
            if on_rendition {
                self.request_source_keyframe(stream, now);
            }
        }
        Ok(())
    }

    /// Starts or stops copying a stream's frames for a program that shows
    /// it, live now or later. Starting asks a live publisher for a
    /// keyframe: the program can show nothing before one.
    pub fn set_copied(&mut self, stream: &StreamKey, copied: bool, now: Instant) {
        if copied {
            self.copied.insert(stream.clone());
            self.request_source_keyframe(stream, now);
        } else {
            self.copied.remove(stream);
        }
    }

    /// The transcoder opened its ladder: its renditions become feeds.
    /// Subscribers whose choice now maps to one get it from its next
    /// keyframe, which is asked for.
    pub fn set_renditions(
        &mut self,
        stream: &StreamKey,
        renditions: Vec<RenditionLayer>,
        source_height: u32,
    ) {
        let Some(media) = self.media.get_mut(stream) else {
            return;
        };
        media.set_renditions(&renditions, source_height);
        let wants_rendition = self
            .subscribers
            .get(stream)
            .into_iter()
            .flatten()
            .any(|sub| matches!(self.target_feed(*sub), Some(Feed::Rendition(_))));
        if wants_rendition {
            self.events
                .push_back(SfuEvent::RenditionKeyframeWanted(stream.clone()));
        }
    }

    /// A transcoded frame of rendition `index` of `stream`, stamped with
    /// its source frame's RTP time (90 kHz): written to the subscribers on
    /// that rendition, or switching to it.
    pub fn push_rendition(
        &mut self,
        stream: &StreamKey,
        index: usize,
        data: &[u8],
        keyframe: bool,
        time: u64,
        now: Instant,
    ) {
        let Some(media) = self.media.get(stream) else {
            return;
        };
        let feed = Feed::Rendition(index);
        if !media.offers(feed) {
            return;
        }
        let mut too_old = false;
        // One buffer for every subscriber's writer.
        let shared: std::sync::Arc<[u8]> = data.into();
        for sub in self.subscribers.get(stream).into_iter().flatten() {
            let Some(peer) = self.peers.get_mut(sub) else {
                continue;
            };
            let (Some(pt), Some(mid), true) = (
                peer.rendition_pt,
                peer.track_of_kind(MediaKind::Video),
                peer.connected,
            ) else {
                continue;
            };
            let target = feed_target(Some(media), peer);
            if !peer.feed.admit(feed, target, keyframe, time) {
                // A keyframe that came too late for a viewer waiting on
                // it (the transcoder was behind): ask for another.
                too_old |= keyframe && target == feed && peer.feed.current != Some(feed);
                continue;
            }
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            if let Err(error) = writer.write(pt, now, MediaTime::from_90khz(time), shared.clone()) {
                tracing::debug!(peer = %sub, %error, "write of a rendition failed");
            }
            self.dirty.push(*sub);
        }
        if too_old {
            self.events
                .push_back(SfuEvent::RenditionKeyframeWanted(stream.clone()));
        }
        self.drive(now);
    }

    /// Starts a stream the engine publishes itself (a room's program):
    /// viewers subscribe to it like to any stream, and its frames come
    /// from [`Self::push_local`]. Announced like a publisher connecting.
    pub fn publish_local(&mut self, stream: StreamKey) -> Result<PeerId, SfuError> {
        if self.is_live(&stream) {
            return Err(SfuError::StreamLive);
        }
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.locals.insert(stream.clone(), id);
        self.events.push_back(SfuEvent::Connected {
            peer: id,
            role: Role::Publisher,
            stream,
            tracks: vec![MediaKind::Audio, MediaKind::Video],
        });
        Ok(id)
    }

    /// The program publishing local stream `stream`, if any.
    pub fn local_source(&self, stream: &StreamKey) -> Option<PeerId> {
        self.locals.get(stream).copied()
    }

    /// Ends local stream `id` with its viewers, like a publisher leaving.
    /// A newer program on the same stream is left alone.
    pub fn end_local(&mut self, stream: &StreamKey, id: PeerId, now: Instant) {
        if self.locals.get(stream) != Some(&id) {
            return;
        }
        self.locals.remove(stream);
        self.media.remove(stream);
        for sub in self.subscribers.remove(stream).unwrap_or_default() {
            self.close(sub, now);
        }
        self.events.push_back(SfuEvent::Closed {
            peer: id,
            role: Role::Publisher,
            stream: stream.clone(),
        });
        self.drive(now);
    }

    /// A frame of a local stream: written to its viewers (video from a
    /// keyframe on, as for any source), copied for its transcoder when
    /// tapped.
    pub fn push_local(&mut self, frame: LocalFrame, now: Instant) {
        if self.locals.get(&frame.stream) != Some(&frame.source) {
            return;
        }
        let video = frame.kind == MediaKind::Video;
        if self
            .media
            .get(&frame.stream)
            .is_some_and(|media| media.tapped)
        {
            self.events.push_back(SfuEvent::Ingest(IngestFrame {
                stream: frame.stream.clone(),
                kind: frame.kind,
                codec: if video { Codec::H264 } else { Codec::Opus },
                data: frame.data.clone(),
                keyframe: frame.keyframe,
                time: frame.time,
                received: now,
                contiguous: true,
            }));
        }
        let media = self.media.get(&frame.stream);
        for sub in self.subscribers.get(&frame.stream).into_iter().flatten() {
            let Some(peer) = self.peers.get_mut(sub) else {
                continue;
            };
            let Some(mid) = peer.track_of_kind(frame.kind).filter(|_| peer.connected) else {
                continue;
            };
            let (pt, time) = if video {
                let target = feed_target(media, peer);
                if !peer
                    .feed
                    .admit(Feed::Source, target, frame.keyframe, frame.time)
                {
                    continue;
                }
                (peer.rendition_pt, MediaTime::from_90khz(frame.time))
            } else {
                let time = MediaTime::new(frame.time, Frequency::FORTY_EIGHT_KHZ);
                (peer.opus_pt, time)
            };
            let (Some(pt), Some(writer)) = (pt, peer.rtc.writer(mid)) else {
                continue;
            };
            if let Err(error) = writer.write(pt, now, time, frame.data.clone()) {
                tracing::debug!(peer = %sub, %error, "write of a program frame failed");
            }
            self.dirty.push(*sub);
        }
        self.drive(now);
    }

    /// A subscriber's bandwidth estimate changed: an `auto` viewer of a
    /// transcoded single-layer stream may move between source and
    /// renditions ([`AutoFeed`]); the feed it moves to is asked for a
    /// keyframe.
    fn follow_estimate(&mut self, subscriber: PeerId, estimate_bps: u64, now: Instant) {
        let Some(peer) = self.peers.get(&subscriber) else {
            return;
        };
        if peer.layer != LayerChoice::Auto || peer.rendition_pt.is_none() {
            return;
        }
        let stream = peer.stream.clone();
        let Some(media) = self.media.get(&stream).filter(|m| m.has_renditions()) else {
            return;
        };
        let source_bps = self
            .publishers
            .get(&stream)
            .and_then(|id| self.peers.get(id))
            .and_then(|p| p.source_bps);
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return;
        };
        match peer.auto.update(media, estimate_bps, source_bps, now) {
            Some(Feed::Rendition(_)) => self
                .events
                .push_back(SfuEvent::RenditionKeyframeWanted(stream)),
            Some(Feed::Source) => {
                self.request_keyframe(&stream, KeyframeRequestKind::Pli, None, now);
            }
            None => {}
        }
    }

    /// Asks a stream's publisher for a keyframe (throttled like every
    /// request): its transcoder lost frames and must start over.
    pub fn request_source_keyframe(&mut self, stream: &StreamKey, now: Instant) {
        self.request_keyframe(stream, KeyframeRequestKind::Fir, None, now);
        self.drive(now);
    }

    /// The feed a subscriber of a single-layer stream should get (`None`
    /// for unknown peers).
    fn target_feed(&self, subscriber: PeerId) -> Option<Feed> {
        let peer = self.peers.get(&subscriber)?;
        Some(feed_target(self.media.get(&peer.stream), peer))
    }

    /// Asks the stream's publisher for a keyframe on its video track, at
    /// most once per `keyframe_interval`.
    fn request_keyframe(
        &mut self,
        stream: &StreamKey,
        kind: KeyframeRequestKind,
        rid: Option<Rid>,
        now: Instant,
    ) {
        if self.locals.contains_key(stream) {
            self.events
                .push_back(SfuEvent::LocalKeyframeWanted(stream.clone()));
            return;
        }
        let Some(id) = self.publishers.get(stream).copied() else {
            return;
        };
        let interval = self.config.keyframe_interval;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(mid) = peer.track_of_kind(MediaKind::Video) else {
            return;
        };
        let recent = peer
            .last_keyframe_request
            .iter()
            .any(|(m, r, at)| *m == mid && *r == rid && now.duration_since(*at) < interval);
        if recent {
            // Held, not dropped: a viewer that joins just after another
            // must not wait for the publisher's next periodic keyframe.
            if !peer
                .pending_keyframe
                .iter()
                .any(|(m, r, _)| *m == mid && *r == rid)
            {
                peer.pending_keyframe.push((mid, rid, kind));
            }
            return;
        }
        peer.pending_keyframe
            .retain(|(m, r, _)| !(*m == mid && *r == rid));
        let Some(mut writer) = peer.rtc.writer(mid) else {
            return;
        };
        if writer.request_keyframe(rid, kind).is_ok() {
            // str0m writes the PLI/FIR only when its session handles a
            // timeout, which may be hundreds of milliseconds away (the
            // next receiver report): a joining viewer would wait that
            // long on top of the publisher's keyframe. Run it now.
            let _ = peer.rtc.handle_input(Input::Timeout(now));
            peer.last_keyframe_request
                .retain(|(m, r, _)| !(*m == mid && *r == rid));
            peer.last_keyframe_request.push((mid, rid, now));
            self.dirty.push(id);
        }
    }

    /// The simulcast layer a subscriber should get now, if its stream has
    /// layers.
    fn target_rid(&self, subscriber: PeerId) -> Option<Rid> {
        let peer = self.peers.get(&subscriber)?;
        let publisher = self.publishers.get(&peer.stream)?;
        let layers = &self.peers.get(publisher)?.layers;
        match (peer.layer, peer.estimate_bps) {
            (LayerChoice::Auto, Some(estimate)) => layers.pick_for_bandwidth(estimate),
            (choice, _) => layers.pick(choice),
        }
    }

    /// Changes what a subscriber asks for; the switch happens on the next
    /// keyframe of the new layer, which is requested now.
    pub fn set_layer(
        &mut self,
        subscriber: PeerId,
        layer: LayerChoice,
        now: Instant,
    ) -> Result<(), SfuError> {
        let peer = self
            .peers
            .get_mut(&subscriber)
            .ok_or(SfuError::UnknownPeer)?;
        if peer.role != Role::Subscriber {
            return Err(SfuError::UnknownPeer);
        }
        peer.layer = layer;
        let stream = peer.stream.clone();
        let current_feed = peer.feed.current;
        let target = self.target_rid(subscriber);
        if target.is_some() && self.peers.get(&subscriber).and_then(|p| p.current_rid) != target {
            self.request_keyframe(&stream, KeyframeRequestKind::Pli, target, now);
        }
        match self.target_feed(subscriber) {
            Some(Feed::Rendition(index)) if current_feed != Some(Feed::Rendition(index)) => {
                self.events
                    .push_back(SfuEvent::RenditionKeyframeWanted(stream));
            }
            Some(Feed::Source) if current_feed != Some(Feed::Source) && target.is_none() => {
                self.request_keyframe(&stream, KeyframeRequestKind::Pli, None, now);
            }
            _ => {}
        }
        self.drive(now);
        Ok(())
    }

    /// The layer a subscriber is receiving (`None` without simulcast).
    pub fn current_layer(&self, subscriber: PeerId) -> Option<Rid> {
        self.peers.get(&subscriber)?.current_rid
    }
}

/// The feed a subscriber should get: renditions only for subscribers that
/// negotiated H.264 and asked for less than the source.
fn feed_target(media: Option<&StreamMedia>, peer: &Peer) -> Feed {
    match media {
        Some(media) if peer.rendition_pt.is_some() => pick_feed(media, peer.layer, peer.auto.feed),
        _ => Feed::Source,
    }
}

/// An audio or video line of an SDP answer.
struct MediaLine {
    kind: MediaKind,
    mid: String,
    /// False when the line was rejected (port 0 or no codec in common).
    accepted: bool,
}

/// The audio and video lines of the answer str0m wrote: which media the
/// peer will carry, and whether any codec was agreed for each.
fn media_lines(answer: &str) -> Vec<MediaLine> {
    let mut lines: Vec<MediaLine> = Vec::new();
    let mut in_media = false;
    for line in answer.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            let mut fields = rest.split_whitespace();
            let kind = match fields.next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
            let port = fields.next().unwrap_or("0");
            let formats = fields.skip(1).count();
            in_media = kind.is_some();
            if let Some(kind) = kind {
                lines.push(MediaLine {
                    kind,
                    mid: String::new(),
                    accepted: port != "0" && formats > 0,
                });
            }
        } else if let (true, Some(mid), Some(last)) =
            (in_media, line.strip_prefix("a=mid:"), lines.last_mut())
        {
            last.mid = mid.trim().to_owned();
        }
    }
    lines
}
