"""With Redis down the catalog keeps answering from PostgreSQL; no stale data afterwards."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.components import Redis, free_port
from tests.conftest import ServiceSpawner, wait_for_health
from tests.factories import book, usd, word


async def test_catalog_answers_without_redis_and_is_fresh_after(
    spawn_service: ServiceSpawner, tmp_path: Path
) -> None:
    redis = Redis(tmp_path, free_port())
    redis.start()
    try:
        _, address = spawn_service("catalog", CLOUDSHELF_REDIS_URL=redis.url)
        wait_for_health(address, "SERVING", "dependency/redis")
        async with spawn_service.channel(address) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            tag = word()
            created = (
                await catalog.CreateBook(pb.CreateBookRequest(book=book(title=f"Cached {tag}")))
            ).book
            await catalog.GetBook(pb.GetBookRequest(id=created.id))  # now in Redis

            redis.stop()
            for _ in range(3):  # every read and write still works, from PostgreSQL
                shown = (await catalog.GetBook(pb.GetBookRequest(id=created.id), timeout=5)).book
                assert shown.id == created.id
            await catalog.UpdateBook(
                pb.UpdateBookRequest(
                    book=pb.Book(id=created.id, price=usd(777)),
                    update_mask=FieldMask(paths=["price"]),
                ),
                timeout=5,
            )
            found = await catalog.SearchBooks(pb.SearchBooksRequest(query=tag), timeout=5)
            assert [b.id for b in found.books] == [created.id]
            batch = await catalog.BatchGetBooks(
                pb.BatchGetBooksRequest(ids=[created.id]), timeout=5
            )
            assert batch.books[0].price == usd(777)
            wait_for_health(address, "NOT_SERVING", "dependency/redis")
            wait_for_health(address, "SERVING")  # degraded, not down

            redis.start()
            wait_for_health(address, "SERVING", "dependency/redis")
            shown = (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book
            assert shown.price == usd(777)
    finally:
        redis.stop()
