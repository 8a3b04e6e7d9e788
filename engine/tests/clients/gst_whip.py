#!/usr/bin/python3
"""A WHIP publisher built on GStreamer's webrtcbin (Debian's GStreamer 1.22),
the client the engine's GStreamer interop test drives.

    gst_whip.py URL TOKEN SECONDS

Publishes a VP8 test pattern (320x240, 30 fps) and an Opus tone with
max-bundle, as GStreamer's whipsink does: the audio m-line is bundle-only
(port 0), no sdes:mid header extension is offered, and the offer carries
every candidate libnice found. Prints `location <path>` once the answer is
applied, publishes for SECONDS, then DELETEs the session and exits 0. Any
refusal is printed as `refused <status> <body>` and exits 2.
"""

import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = """
webrtcbin name=webrtc bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball
  ! video/x-raw,width=320,height=240,framerate=30/1
  ! vp8enc deadline=1 keyframe-max-dist=60
  ! rtpvp8pay pt=96
  ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000
  ! webrtc.
audiotestsrc is-live=true wave=sine
  ! audioconvert ! audioresample ! opusenc
  ! rtpopuspay pt=97
  ! application/x-rtp,media=audio,encoding-name=OPUS,payload=97,clock-rate=48000
  ! webrtc.
"""


def request(method, url, token, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def main():
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    base = url.split("/whip/")[0]
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE)
    webrtc = pipeline.get_by_name("webrtc")
    loop = GLib.MainLoop()
    state = {"location": None, "posted": False, "code": 0}

    def fail(line, code):
        print(line, flush=True)
        state["code"] = code
        loop.quit()

    def on_offer(promise, _):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            fail(f"error create-offer: {reply.to_string() if reply else 'no reply'}", 3)
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element):
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    def on_gathering(element, _):
        if element.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        if state["posted"]:
            return
        state["posted"] = True
        GLib.idle_add(post_offer)

    def post_offer():
        offer = webrtc.get_property("local-description").sdp.as_text()
        sys.stderr.write(offer)
        status, headers, body = request("POST", url, token, offer.encode(), "application/sdp")
        if status != 201:
            fail(f"refused {status} {body}", 2)
            return False
        _, message = GstSdp.SDPMessage.new_from_text(body)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        state["location"] = headers.get("Location") or headers.get("location")
        print(f"location {state['location']}", flush=True)
        GLib.timeout_add(int(seconds * 1000), finish)
        return False

    def finish():
        status, _, body = request("DELETE", base + state["location"], token)
        print(f"deleted {status}", flush=True)
        loop.quit()
        return False

    def on_message(_, message):
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            fail(f"error {error.message} {debug}", 3)

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int((seconds + 30) * 1000), lambda: fail("timeout", 4))
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    sys.exit(state["code"])


if __name__ == "__main__":
    main()
