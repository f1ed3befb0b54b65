"""The script a careful user would write instead of pixbatch: a Python
asyncio + aiohttp runner for the same API, used by bench/run as the peer
that pixbatch is measured against, side by side on the same simulator.

Token-bucket submits (burst of one, so no window exceeds the rate), a poll
of each task every second after it is accepted, streamed downloads to disk
with a SHA-256, and a results CSV. No ledger: this is the fast path a
script takes, so it is a fair bound on what interpretation costs.

Usage: baseline.py MANIFEST.csv OUT_DIR --base-url URL --rate PER_SECOND
"""

import argparse
import asyncio
import csv
import hashlib
import os
import time

import aiohttp

SUBMIT = "/v3/async/pixverse-v6-i2v"
RESULT = "/v3/async/task-result"
FIELDS = ("image", "prompt", "duration", "resolution", "cfg_scale", "seed", "negative_prompt")


class TokenBucket:
    """One token, refilled every 1/rate seconds: submissions are spaced
    exactly, never bunched."""

    def __init__(self, rate):
        self.interval = 1.0 / rate
        self.next_at = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self):
        async with self.lock:
            now = time.monotonic()
            if self.next_at > now:
                await asyncio.sleep(self.next_at - now)
            self.next_at = max(self.next_at, now) + self.interval


def request_body(row):
    body = {}
    for field in FIELDS:
        value = (row.get(field) or "").strip()
        if not value:
            continue
        if field in ("duration", "seed"):
            body[field] = int(float(value))
        elif field == "cfg_scale":
            body[field] = float(value)
        else:
            body[field] = value
    audio = (row.get("generate_audio") or "").strip().lower()
    if audio:
        body["generate_audio_switch"] = audio in ("1", "true", "yes")
    return body


async def call_with_retries(make_call):
    delay = 0.5
    while True:
        try:
            return await make_call()
        except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


async def run_row(session, args, bucket, row, index):
    job_id = row.get("id") or f"row-{index}"

    async def submit():
        async with session.post(args.base_url + SUBMIT, json=request_body(row)) as response:
            if response.status == 429 or response.status >= 500:
                raise RuntimeError(f"transient {response.status}")
            response.raise_for_status()
            return (await response.json())["task_id"]

    await bucket.take()
    task_id = await call_with_retries(submit)
    submitted_at = time.time()

    async def poll():
        async with session.get(args.base_url + RESULT, params={"task_id": task_id}) as response:
            if response.status == 429 or response.status >= 500:
                raise RuntimeError(f"transient {response.status}")
            response.raise_for_status()
            return await response.json()

    while True:
        await asyncio.sleep(1.0)
        result = await call_with_retries(poll)
        status = result["task"]["status"]
        if status == "TASK_STATUS_SUCCEED":
            break
        if status == "TASK_STATUS_FAILED":
            return [job_id, task_id, "failed", "", "", submitted_at]

    url = result["videos"][0]["video_url"]
    path = os.path.join(args.out, f"{job_id}.mp4")

    async def download():
        digest = hashlib.sha256()
        async with session.get(url) as response:
            response.raise_for_status()
            with open(path + ".part", "wb") as file:
                async for chunk in response.content.iter_chunked(1 << 16):
                    digest.update(chunk)
                    file.write(chunk)
        os.replace(path + ".part", path)
        return digest.hexdigest()

    sha256 = await call_with_retries(download)
    return [job_id, task_id, "downloaded", path, sha256, submitted_at]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("out")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="submissions per second")
    args = parser.parse_args()
    args.base_url = args.base_url.rstrip("/")
    os.makedirs(args.out, exist_ok=True)
    with open(args.manifest, newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
    bucket = TokenBucket(args.rate)
    headers = {"Authorization": "Bearer " + os.environ.get("HIGHWAY_API_KEY", "sim")}
    connector = aiohttp.TCPConnector(limit=100)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(
            *(run_row(session, args, bucket, row, index) for index, row in enumerate(rows))
        )
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["job_id", "task_id", "state", "local_path", "sha256", "submitted_at"])
        writer.writerows(results)


if __name__ == "__main__":
    asyncio.run(main())
