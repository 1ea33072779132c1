#!/usr/bin/python3
"""Consume what edgegw publishes and print every device's whole state.

Reads single readings ({prefix}/{gateway}/{device}) and batches
({prefix}/{gateway}/batch, plain, gzip or zstd as their content-encoding
user property says or, over MQTT 3.1.1, which has no properties, as their
first bytes show), drops repeated seqs (delivery is at least once), and
applies report-by-exception messages as docs/CONFIG.md says: a full reading
replaces the device's state, a partial one updates the points it carries.
For each new reading it prints one JSON line: the device's state after it.

    {"gateway":"pi-7","device":"meter1","seq":1842,"ts":"…","full":false,
     "values":{…every point…},"errors":{…}}

usage: consumer.py [--host 127.0.0.1] [--port 1883] [--prefix edgegw]
                   [--gateway +] [--username U --password P] [--mqtt 5|3.1.1]
Debian: apt-get install python3-paho-mqtt python3-zstandard (paho-mqtt 1.6).
"""
import argparse
import collections
import gzip
import io
import json
import sys
import zlib

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

try:
    import zstandard
except ImportError:  # only needed for compression = "zstd"
    zstandard = None

# What a damaged or hostile message raises; it is reported and skipped.
BAD_MESSAGE = (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError, zlib.error) + \
    ((zstandard.ZstdError,) if zstandard else ())

MAX_DOC = 16 << 20  # a batch larger than this once decompressed is refused
SEEN = 100_000      # seqs remembered per gateway to drop repeats


def sniff(payload):
    """The encoding a message's first bytes show (no content-encoding
    property: MQTT 3.1.1, or a tool that drops properties)."""
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if payload[:2] == b"\x1f\x8b":
        return "gzip"
    return ""


def decode(payload, encoding):
    """The JSON document of a message, decompressed as its encoding says."""
    if encoding is None:
        encoding = sniff(payload)
    if encoding == "":
        return payload
    if encoding == "gzip":
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as f:
            doc = f.read(MAX_DOC + 1)
    elif encoding == "zstd":
        if zstandard is None:
            raise ValueError("zstd batch: install python3-zstandard")
        reader = zstandard.ZstdDecompressor().stream_reader(payload)
        doc = reader.read(MAX_DOC + 1)
    else:
        raise ValueError("unknown content-encoding %r" % encoding)
    if len(doc) > MAX_DOC:
        raise ValueError("batch larger than %d bytes decompressed" % MAX_DOC)
    return doc


class Consumer:
    """The state of every device, kept from the messages as they come."""

    def __init__(self, out):
        self.out = out
        self.seen = collections.defaultdict(collections.OrderedDict)
        self.state = {}  # (gateway, device) -> point -> (ts, value, error)

    def message(self, gateway, device, payload, encoding):
        doc = json.loads(decode(payload, encoding))
        readings = doc if device == "batch" else [doc]
        for r in readings:
            self.reading(gateway, r)

    def reading(self, gateway, r):
        seen = self.seen[gateway]
        if r["seq"] in seen:
            return
        seen[r["seq"]] = True
        if len(seen) > SEEN:
            seen.popitem(last=False)
        ts, full = r["ts"], r.get("full", True)
        points = self.state.setdefault((gateway, r["device"]), {})
        carried = {p: (ts, v, None) for p, v in r.get("values", {}).items()}
        carried.update({p: (ts, None, e) for p, e in r.get("errors", {}).items()})
        if full:  # points not in a full reading are gone, unless newer
            for p in [p for p, (t, _, _) in points.items() if t < ts and p not in carried]:
                del points[p]
        for p, new in carried.items():
            # ts, not arrival, decides: with max_rate a late backlog reading
            # never overwrites a newer value.
            if p not in points or points[p][0] <= ts:
                points[p] = new
        row = {"gateway": gateway, "device": r["device"], "seq": r["seq"], "ts": ts, "full": full,
               "values": {p: v for p, (_, v, e) in sorted(points.items()) if e is None},
               "errors": {p: e for p, (_, _, e) in sorted(points.items()) if e is not None}}
        self.out.write(json.dumps(row, separators=(",", ":")) + "\n")
        self.out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", default="edgegw")
    ap.add_argument("--gateway", default="+", help="a gateway id, or + for all")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--mqtt", choices=("5", "3.1.1"), default="5", help="the MQTT version the broker speaks")
    args = ap.parse_args()
    consumer = Consumer(sys.stdout)
    depth = args.prefix.count("/") + 1

    def on_connect(client, userdata, flags, rc, properties=None):
        if rc != 0:
            sys.exit("consumer: connect refused: %s" % rc)
        client.subscribe("%s/%s/+" % (args.prefix, args.gateway), qos=1)

    def on_subscribe(client, userdata, mid, granted, properties=None):
        print("consumer: subscribed", file=sys.stderr, flush=True)

    def on_message(client, userdata, msg):
        levels = msg.topic.split("/")[depth:]
        if len(levels) != 2 or levels[1] == "status":
            return
        props = getattr(msg, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or [])
        try:
            consumer.message(levels[0], levels[1], msg.payload, user.get("content-encoding"))
        except BAD_MESSAGE as e:
            print("consumer: %s: %s" % (msg.topic, e), file=sys.stderr, flush=True)

    v5 = args.mqtt == "5"
    client = mqtt.Client(protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True)
    if args.username:
        client.username_pw_set(args.username, args.password)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
    client.connect(args.host, args.port, keepalive=30, properties=props)
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
