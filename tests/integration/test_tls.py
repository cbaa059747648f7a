"""Optional mutual TLS under the handshake, over real sockets: both planes connect
with certificates from the cluster CA, and refuse a peer without one or with one
from another CA (`streamer.security.tls`, keys made with the ``openssl`` command)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netlayer.gate import ChannelInfo, InputGate
from netlayer.partition import RecordWriter, ResultPartition
from netlayer.protocol.handshake import Credentials
from netlayer.transport import PartitionServer
from streamer.errors import ConfigError
from streamer.rpc import RpcConnectError, RpcServer, connect
from streamer.security.tls import (
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    TlsConfig,
    make_test_pki,
    tls_from_env,
)

pytestmark = pytest.mark.timeout(60)

KEY = b"tls-test-key-of-32-bytes-exactly"
ME = Credentials(KEY, {"role": "client"})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsConfig, TlsConfig]:
    """The cluster's PKI, and a stranger's (another CA)."""
    return (
        make_test_pki(tmp_path_factory.mktemp("cluster-pki")),
        make_test_pki(tmp_path_factory.mktemp("stranger-pki")),
    )


def test_the_data_plane_over_mutual_tls(pki: tuple[TlsConfig, TlsConfig]) -> None:
    ours, theirs = pki

    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=0)
        server = PartitionServer(auth_key=KEY, ssl=ours.server_context())
        server.register(part)
        await server.start()
        stranger = InputGate(
            [ChannelInfo("p", 0, server.address)],
            credentials=ME,
            ssl=theirs.client_context(),
            connect_timeout=1,
        )
        await stranger.start()  # the TLS handshake fails: never connected
        assert not stranger.channels[0].is_connected
        await stranger.close()
        plain = InputGate([ChannelInfo("p", 0, server.address)], credentials=ME, connect_timeout=1)
        await plain.start()
        assert not plain.channels[0].is_connected
        await plain.close()
        gate = InputGate(
            [ChannelInfo("p", 0, server.address)], credentials=ME, ssl=ours.client_context()
        )
        await gate.start()
        RecordWriter(part).emit({"over": "tls"})
        assert await asyncio.wait_for(gate.next(), 5) == (0, {"over": "tls"})
        await gate.close()
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_control_plane_over_mutual_tls(pki: tuple[TlsConfig, TlsConfig]) -> None:
    ours, theirs = pki

    async def handler(conn: object, msg: object) -> None:
        return None

    async def main() -> None:
        server = await RpcServer.start(handler, key_for=lambda _: KEY, ssl=ours.server_context())
        host, port = server.address
        client = await connect(host, port, credentials=ME, ssl=ours.client_context())
        assert client.identity == {} and not client.closed
        await client.close()
        with pytest.raises(RpcConnectError, match=r"cannot connect .*CERTIFICATE_VERIFY_FAILED"):
            await connect(host, port, credentials=ME, ssl=theirs.client_context(), timeout=2)
        with pytest.raises(RpcConnectError, match="cannot authenticate"):
            await connect(host, port, credentials=ME, timeout=2)  # plaintext to a TLS port
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_tls_settings_come_all_three_or_none(
    pki: tuple[TlsConfig, TlsConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ours, _ = pki
    for name in (TLS_CERT_ENV, TLS_KEY_ENV, TLS_CA_ENV):
        monkeypatch.delenv(name, raising=False)
    assert tls_from_env() is None
    monkeypatch.setenv(TLS_CERT_ENV, str(ours.cert))
    with pytest.raises(ConfigError, match="STREAMER_TLS_KEY, STREAMER_TLS_CA unset"):
        tls_from_env()
    monkeypatch.setenv(TLS_KEY_ENV, str(ours.key))
    monkeypatch.setenv(TLS_CA_ENV, str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"nope\.pem: no such file"):
        tls_from_env()
    monkeypatch.setenv(TLS_CA_ENV, str(ours.ca))
    assert tls_from_env() == ours
