"""The built-in sweepers on real Valkey and real storage (local folder and SeaweedFS S3).

Each removes exactly the expired things and nothing else, a dry run removes nothing, two runs at once
remove and count each item once, and a run cut off halfway finishes when run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from framework_cleanup.builtin import _OUTBOX_BATCH, _stale_files
from framework_cleanup.sweepers import SweepReport, run_sweeper
from structlog.testing import capture_logs

from framework.clock import SimulatedClock
from framework.storage import StorageUnavailable
from framework.web.tokens import Tokens
from tests.framework.worker_app import wait_until
from tests.plugins.cleanup.conftest import Store, builtin

if TYPE_CHECKING:
    from pathlib import Path

    from framework.services import Services
    from framework.settings import Settings

DAY = 86400.0


async def sweep(store: Store, name: str, **kwargs: Any) -> SweepReport:
    sweeper = builtin(store.services.settings, name)
    return await run_sweeper(store.services, sweeper, now=store.now(sweeper.grace), **kwargs)


# -- tmp ------------------------------------------------------------------------------------------


async def test_tmp_removes_old_temporary_objects_only(store: Store) -> None:
    await store.put("tmp/a.bin", b"12345")
    await store.put("tmp/sub/b.bin", b"1234567")
    await store.put("keep/old.bin", b"x")
    await store.put("tmpfoo/not-tmp.bin", b"x")
    await store.split()
    await store.put("tmp/young.bin", b"y")

    report = await sweep(store, "tmp")

    assert (report.removed, report.bytes, report.errors, report.failed) == (2, 12, [], False)
    assert sorted(report.items) == ["tmp/a.bin", "tmp/sub/b.bin"]
    assert await store.keys() == {"keep/old.bin", "tmpfoo/not-tmp.bin", "tmp/young.bin"}
    again = await sweep(store, "tmp")
    assert (again.removed, again.errors) == (0, [])


# -- uploads --------------------------------------------------------------------------------------


async def seed_uploads(store: Store) -> dict[str, set[str]]:
    """Old uploads in each state, then young ones. Returns the keys that must go and that must stay."""
    long_ago = time.time() - 3 * DAY
    gone: set[str] = set()
    kept: set[str] = set()

    async def upload(upload_id: str, files: list[str], state: str | None, created: float, into: set[str]) -> None:
        for name in files:
            await store.put(f"uploads/{upload_id}/{name}", b"0123456789")
            into.add(f"uploads/{upload_id}/{name}")
        if state is not None:
            await store.put_record(upload_id, state, created)
            into.add(f"uploads/{upload_id}/record.json")

    await upload("done1", ["original.jpg", "small.webp", "large.webp"], "done", long_ago, kept)
    await upload("abandoned1", ["original.png"], "processing", long_ago, gone)
    await upload("failed1", ["original.jpg"], "failed", long_ago, gone)
    await upload("recent1", ["original.jpg"], "processing", time.time(), kept)  # not yet abandoned
    await upload("orphan1", ["small.webp", "medium.webp"], "done", long_ago, gone)  # original deleted
    await upload("mixed1", ["original.jpg"], "processing", long_ago, kept)  # gets a young thumbnail below
    await store.split()
    await upload("fresh1", ["small.webp"], None, 0, kept)  # a young orphan thumbnail: within the grace period
    await store.put("uploads/mixed1/small.webp", b"young")
    kept.add("uploads/mixed1/small.webp")
    return {"gone": gone, "kept": kept}


async def test_uploads_removes_abandoned_uploads_and_orphan_thumbnails(store: Store) -> None:
    seeded = await seed_uploads(store)

    report = await sweep(store, "uploads")

    assert (report.errors, report.failed) == ([], False)
    assert report.removed == len(seeded["gone"]) == 7
    assert set(report.items) == seeded["gone"]
    assert await store.keys("uploads/") == seeded["kept"]
    again = await sweep(store, "uploads")
    assert (again.removed, again.errors) == (0, [])


async def test_uploads_bytes_are_the_sizes_removed(store: Store) -> None:
    await store.put("uploads/a1/original.jpg", b"x" * 1000)
    await store.put("uploads/a1/small.webp", b"x" * 234)
    await store.put_record("a1", "processing", time.time() - 3 * DAY)
    record_size = len(await store.storage.get("uploads/a1/record.json"))
    await store.split()

    report = await sweep(store, "uploads")

    assert (report.removed, report.bytes) == (3, 1000 + 234 + record_size)


async def test_uploads_without_record(local_store: Store) -> None:
    await local_store.put("uploads/norecord-old/original.jpg")
    await local_store.put("uploads/norecord-new/original.jpg")
    await local_store.split()
    local_store.age("uploads/norecord-old/original.jpg", 3 * DAY)
    local_store.age("uploads/norecord-new/original.jpg", 2 * 3600)
    sweeper = builtin(local_store.services.settings, "uploads")

    report = await run_sweeper(local_store.services, sweeper)

    assert report.items == ["uploads/norecord-old/original.jpg"]
    assert await local_store.keys() == {"uploads/norecord-new/original.jpg"}


async def test_uploads_with_an_unreadable_record_are_left_alone(store: Store) -> None:
    await store.put("uploads/bad1/original.jpg")
    await store.put("uploads/bad1/record.json", b"{not json")
    await store.put("uploads/bad2/original.jpg")
    await store.put("uploads/bad2/record.json", b'{"state": "\xff\xfe"}')  # not UTF-8
    await store.split()

    with capture_logs() as logs:
        report = await sweep(store, "uploads")

    assert (report.removed, report.failed) == (0, False)
    assert len(report.errors) == 2
    assert "uploads/bad1/record.json" in report.errors[0]
    assert "uploads/bad2/record.json" in report.errors[1]
    unreadable = [e["key"] for e in logs if e["event"] == "cleanup_upload_record_unreadable"]
    assert unreadable == ["uploads/bad1/record.json", "uploads/bad2/record.json"]
    assert await store.keys() == {
        "uploads/bad1/original.jpg",
        "uploads/bad1/record.json",
        "uploads/bad2/original.jpg",
        "uploads/bad2/record.json",
    }


async def test_uploads_with_a_record_over_64_kib_are_left_alone_unread(store: Store) -> None:
    """A record.json far larger than any upload record (another producer's, or a hostile one) was read whole
    into memory, and taken for a record; it is refused unread, its upload left alone and the sweep goes on."""
    long_ago = time.time() - 3 * DAY
    big = {"state": "processing", "created": long_ago, "original": "uploads/big1/original.jpg", "pad": "x" * 65536}
    await store.put("uploads/big1/original.jpg")
    await store.put("uploads/big1/record.json", msgspec.json.encode(big))
    await store.put("uploads/gone1/original.jpg")
    await store.put_record("gone1", "processing", long_ago)
    await store.split()

    with capture_logs() as logs:
        report = await sweep(store, "uploads")

    assert (report.failed, report.removed) == (False, 2)
    assert sorted(report.items) == ["uploads/gone1/original.jpg", "uploads/gone1/record.json"]
    assert len(report.errors) == 1
    assert "uploads/big1/record.json" in report.errors[0]
    assert "more than the 65536 bytes allowed" in report.errors[0]
    unreadable = [e for e in logs if e["event"] == "cleanup_upload_record_unreadable"]
    assert [(e["key"], e["log_level"]) for e in unreadable] == [("uploads/big1/record.json", "warning")]
    assert await store.keys() == {"uploads/big1/original.jpg", "uploads/big1/record.json"}


async def test_uploads_whose_record_names_an_original_elsewhere(store: Store) -> None:
    await store.put("originals/kept.jpg")
    await store.put("uploads/ext1/small.webp")
    await store.put_record("ext1", "done", time.time() - 3 * DAY, original="originals/kept.jpg")
    await store.put("uploads/ext2/small.webp")
    await store.put_record("ext2", "done", time.time() - 3 * DAY, original="originals/deleted.jpg")
    await store.split()

    report = await sweep(store, "uploads")

    assert sorted(report.items) == ["uploads/ext2/record.json", "uploads/ext2/small.webp"]
    assert await store.keys("uploads/") == {"uploads/ext1/small.webp", "uploads/ext1/record.json"}


async def test_uploads_prefix_is_configurable(store: Store) -> None:
    settings = store.services.settings.replace(plugins={"cleanup": {"uploads_prefix": "media/"}})
    await store.put("media/m1/small.webp")
    await store.put("uploads/u1/small.webp")
    await store.split()
    sweeper = builtin(settings, "uploads")

    report = await run_sweeper(store.services, sweeper, now=store.now(sweeper.grace))

    assert report.items == ["media/m1/small.webp"]


# -- tokens ---------------------------------------------------------------------------------------


async def test_tokens_removes_expired_tokens_only(services: Services) -> None:
    tokens = Tokens.from_services(services)
    short = await tokens.issue("verify-email", "a", ttl=10)
    long = await tokens.issue("password-reset", "b", ttl=3600)
    used = await tokens.issue("verify-email", "c", ttl=10)
    assert await tokens.consume("verify-email", used) is not None
    sweeper = builtin(services.settings, "tokens")

    report = await run_sweeper(services, sweeper, now=time.time() + 100)

    assert (report.removed, report.errors) == (1, [])
    assert report.bytes > 0
    assert report.items[0].startswith(services.schema.token("verify-email", ""))
    assert await tokens.verify("verify-email", short) is None
    assert await tokens.consume("password-reset", long) is not None
    assert await services.redis.zcard(services.schema.token_index()) == 0


async def test_tokens_removes_an_index_entry_that_is_not_utf8_and_goes_on(services: Services) -> None:
    """A member no token of ours writes (not UTF-8): listing it raised UnicodeDecodeError, so the sweep failed
    on every run and no expired token was removed again."""
    tokens = Tokens.from_services(services)
    short = await tokens.issue("verify-email", "a", ttl=10)
    await services.redis.zadd(services.schema.token_index(), {b"verify-email:\xff\xfe": 1.0})
    sweeper = builtin(services.settings, "tokens")

    report = await run_sweeper(services, sweeper, now=time.time() + 100)

    assert (report.removed, report.errors) == (2, [])
    assert await tokens.verify("verify-email", short) is None
    assert await services.redis.zcard(services.schema.token_index()) == 0


async def test_tokens_respects_the_grace_period(services: Services) -> None:
    tokens = Tokens.from_services(services)
    await tokens.issue("verify-email", "a", ttl=10)
    sweeper = builtin(services.settings, "tokens")  # grace 60 s

    report = await run_sweeper(services, sweeper, now=time.time() + 30)

    assert report.removed == 0
    assert await services.redis.zcard(services.schema.token_index()) == 1


async def test_tokens_many_batches(services: Services) -> None:
    tokens = Tokens.from_services(services)
    async with services.redis.pipeline(transaction=False) as pipe:
        for i in range(1203):
            pipe.zadd(services.schema.token_index(), {f"verify-email:{i:064x}": 1000.0 + i})
        await pipe.execute()
    sweeper = builtin(services.settings, "tokens")

    dry = await run_sweeper(services, sweeper, now=10_000, dry_run=True)
    real = await run_sweeper(services, sweeper, now=10_000)

    assert dry.removed == real.removed == 1203
    assert await tokens.expired(10_000) == []


# -- outbox ---------------------------------------------------------------------------------------


def write(path: Path, data: bytes, age: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))


def seed_outbox(folder: Path) -> None:
    write(folder / "old.eml", b"x" * 100, 8 * DAY)
    write(folder / ".half.eml.tmp", b"x" * 10, 8 * DAY)
    write(folder / "young.eml", b"y", 1 * DAY)
    write(folder / "notes.txt", b"n", 30 * DAY)
    write(folder / "sub" / "nested.eml", b"n", 30 * DAY)


async def test_outbox_removes_old_mail_files_only(services: Services, settings: Settings) -> None:
    folder = settings.data_path / "outbox"
    seed_outbox(folder)

    report = await run_sweeper(services, builtin(settings, "outbox"))

    assert (report.removed, report.bytes, report.errors) == (2, 110, [])
    assert sorted(os.path.basename(i) for i in report.items) == [".half.eml.tmp", "old.eml"]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sub", "young.eml"]
    assert (folder / "sub" / "nested.eml").exists()


async def test_outbox_follows_the_email_plugins_folder(services: Services, settings: Settings) -> None:
    custom = settings.replace(plugins={"email": {"outbox_dir": "mail/out"}})
    seed_outbox(settings.data_path / "mail" / "out")

    report = await run_sweeper(services, builtin(custom, "outbox"))

    assert report.removed == 2


async def test_outbox_without_a_folder_removes_nothing(services: Services, settings: Settings) -> None:
    report = await run_sweeper(services, builtin(settings, "outbox"))
    assert (report.removed, report.errors, report.failed) == (0, [], False)


def test_outbox_files_are_looked_at_when_the_sweep_reaches_them(tmp_path: Path) -> None:
    """The outbox was listed whole, every file looked at, before the first was removed (an outbox can hold
    millions). Now each file is looked at when it is reached, so one removed meanwhile is left out."""
    for i in range(5):
        write(tmp_path / f"m{i}.eml", b"mail", 8 * DAY)

    stale = iter(_stale_files(tmp_path, time.time() - DAY))
    first, size = next(stale)
    for path in tmp_path.iterdir():
        if path != first:
            path.unlink()  # removed by another run while this one is at its first file

    assert (first.suffix, size) == (".eml", 4)
    assert list(stale) == []


async def test_outbox_removes_more_files_than_one_batch(services: Services, settings: Settings) -> None:
    folder = settings.data_path / "outbox"
    for i in range(2 * _OUTBOX_BATCH + 1):
        write(folder / f"m{i:04d}.eml", b"mail", 8 * DAY)
    write(folder / "young.eml", b"y", 1 * DAY)

    report = await run_sweeper(services, builtin(settings, "outbox"))

    assert (report.removed, report.bytes, report.errors) == (2 * _OUTBOX_BATCH + 1, 4 * (2 * _OUTBOX_BATCH + 1), [])
    assert [p.name for p in folder.iterdir()] == ["young.eml"]


def _handles_on(folder: Path) -> int:
    """How many of this process's file descriptors are open on ``folder``."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/self/fd/{fd}") == str(folder)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see open file descriptors")
async def test_an_outbox_sweep_cut_short_closes_the_folder(services: Services, settings: Settings) -> None:
    """The folder stays open between batches; a run cancelled halfway (shutdown, the task's timeout) left it
    open for as long as its cancellation was kept (the task keeps it), not closed when the run ended."""
    folder = settings.data_path / "outbox"
    for i in range(16 * _OUTBOX_BATCH):
        write(folder / f"m{i:04d}.eml", b"mail", 8 * DAY)

    async def started() -> bool:
        return len(os.listdir(folder)) < 16 * _OUTBOX_BATCH - 10

    run = asyncio.ensure_future(run_sweeper(services, builtin(settings, "outbox")))
    await wait_until(started, timeout=10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert len(os.listdir(folder)) > 0  # cut short
    assert _handles_on(folder) == 0


# -- dry run, concurrency, cut-off ----------------------------------------------------------------


async def seed_everything(store: Store, tokens: int = 5) -> dict[str, int]:
    """Expired things for every built-in sweeper; returns how many each must remove."""
    for i in range(15):
        await store.put(f"tmp/t{i:02d}.bin", b"0123456789")
    for i in range(4):
        await store.put(f"uploads/ab{i}/original.jpg")
        await store.put(f"uploads/ab{i}/small.webp")
        await store.put_record(f"ab{i}", "processing", time.time() - 3 * DAY)
    await store.split()
    issuer = Tokens.from_services(store.services, clock=SimulatedClock(time.time() - 2 * DAY))
    for i in range(tokens):
        await issuer.issue("verify-email", str(i), ttl=3600)  # expired by the index, still in Redis
    settings = store.services.settings
    for i in range(6):
        write(settings.data_path / "outbox" / f"m{i}.eml", b"mail", 8 * DAY)
    return {"tmp": 15, "uploads": 12, "tokens": tokens, "outbox": 6}


async def state_of(store: Store) -> tuple[set[str], int, set[str]]:
    outbox = store.services.settings.data_path / "outbox"
    return (
        await store.keys(),
        await store.services.redis.zcard(store.services.schema.token_index()),
        {p.name for p in outbox.iterdir()},
    )


async def test_dry_run_removes_nothing(store: Store) -> None:
    expected = await seed_everything(store)
    before = await state_of(store)

    dry = {name: await sweep(store, name, dry_run=True) for name in expected}

    assert await state_of(store) == before
    assert {name: r.removed for name, r in dry.items()} == expected
    assert all(r.dry_run and not r.errors for r in dry.values())
    assert [k async for k in store.services.redis.scan_iter(match=f"{store.services.schema.ext}:cleanup:claim:*")] == []
    real = {name: await sweep(store, name) for name in expected}
    assert {name: r.removed for name, r in real.items()} == expected
    assert {name: sorted(r.items) for name, r in real.items()} == {name: sorted(r.items) for name, r in dry.items()}
    assert {name: r.bytes for name, r in real.items()} == {name: r.bytes for name, r in dry.items()}


async def test_two_runs_at_once_remove_each_item_once(store: Store) -> None:
    expected = await seed_everything(store, tokens=40)

    for name, count in expected.items():
        first, second = await asyncio.gather(sweep(store, name), sweep(store, name))
        assert (first.errors, second.errors) == ([], []), name
        assert first.removed + second.removed == count, name
        if count <= 20:  # every removed item is in one sample
            assert len(set(first.items) | set(second.items)) == count, name
    keys, index, outbox = await state_of(store)
    assert (keys, index, outbox) == (set(), 0, set())


class CutOff:
    """A store that becomes unreachable after ``deletes`` deletions, as if the run were cut off."""

    def __init__(self, inner: Any, deletes: int) -> None:
        self.inner = inner
        self.left = deletes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete(self, key: str) -> bool:
        if self.left <= 0:
            raise StorageUnavailable("connection reset")
        self.left -= 1
        return bool(await self.inner.delete(key))


@pytest.mark.parametrize("name", ["tmp", "uploads"])
async def test_a_run_cut_off_halfway_finishes_when_run_again(store: Store, name: str) -> None:
    expected = (await seed_everything(store))[name]
    real = store.services.storage
    store.services._storage = CutOff(real, deletes=5)  # the lazily created store, replaced for the test

    cut = await sweep(store, name)

    assert cut.failed
    assert cut.removed == 5
    assert "StorageUnavailable: connection reset" in cut.errors[0]
    store.services._storage = real
    rest = await sweep(store, name)
    assert (rest.failed, rest.errors) == (False, [])
    assert cut.removed + rest.removed == expected
    assert await store.keys(f"{name}/") == set()


async def test_uploads_written_by_the_images_plugin(store: Store) -> None:
    """The records and keys the images plugin writes are the ones this sweeper reads."""
    from framework_images.storage import (
        ThumbnailFile,
        UploadRecord,
        original_key,
        thumbnail_key,
        write_record,
    )

    storage = store.storage
    long_ago = time.time() - 3 * DAY
    thumbs = {}
    for upload_id in ("img-done", "img-stuck", "img-deleted"):
        await store.put(original_key(upload_id, "jpg"), b"jpeg")
        thumbs[upload_id] = thumbnail_key(upload_id, "small", "webp")
        await store.put(thumbs[upload_id], b"webp")
    thumb = ThumbnailFile(name="small", format="webp", key=thumbs["img-done"], width=1, height=1, size=4)
    for upload_id, state in (("img-done", "done"), ("img-stuck", "processing"), ("img-deleted", "done")):
        record = UploadRecord(
            id=upload_id,
            state=state,  # type: ignore[arg-type]
            original=original_key(upload_id, "jpg"),
            thumbnails=[thumb] if state == "done" else [],
            created=long_ago,
            updated=long_ago,
        )
        await write_record(storage, record)
        store.written(f"uploads/{upload_id}/record.json")
    await storage.delete(original_key("img-deleted", "jpg"))  # the app deleted the original
    await store.split()

    report = await sweep(store, "uploads")

    assert report.errors == []
    assert sorted(report.items) == [
        "uploads/img-deleted/record.json",
        "uploads/img-deleted/small.webp",
        "uploads/img-stuck/original.jpg",
        "uploads/img-stuck/record.json",
        "uploads/img-stuck/small.webp",
    ]
    assert await store.keys() == {
        "uploads/img-done/original.jpg",
        "uploads/img-done/small.webp",
        "uploads/img-done/record.json",
    }
