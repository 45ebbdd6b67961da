"""Read imagelib events from JetStream with the Python CloudEvents SDK.

Usage: read_stream.py NATS_URL STREAM SUBJECT_FILTER COUNT

Prints one JSON line per event: the attributes and data as the Python SDK parsed them.
Exits non-zero if a message is not a CloudEvent the SDK accepts.
"""

import asyncio
import json
import sys

import nats
from cloudevents.http import from_json


async def main(url: str, stream: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    for _ in range(count):
        msg = await sub.next_msg(timeout=10)
        assert msg.headers and msg.headers.get("Content-Type") == "application/cloudevents+json", msg.headers
        event = from_json(msg.data)
        attrs = event.get_attributes()
        print(
            json.dumps(
                {
                    "specversion": attrs["specversion"],
                    "id": attrs["id"],
                    "type": attrs["type"],
                    "source": attrs["source"],
                    "subject": attrs.get("subject"),
                    "dataschema": attrs.get("dataschema"),
                    "traceparent": attrs.get("traceparent"),
                    "msg_id": msg.headers.get("Nats-Msg-Id"),
                    "data": event.data,
                }
            ),
            flush=True,
        )
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
