"""Pre-shared-key authentication (llmlink.AuthKeyFile) across two processes:
a decoder with the prefill peer's key file links and sees the link; one with
another key fails that cluster with LLMLINK_AUTH_FAILED and the peer holds
no link; a key file others can read is refused at init."""
import os

import pytest

from conftest import cluster_to
from llmlink import LLMConfig, LLMDataDist, LLMException, LLMRole, LLMStatusCode

S = LLMStatusCode


def key_file(tmp_path, name, key, mode=0o600):
    path = str(tmp_path / name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def peer_links(peer):
    return peer.request("stats")["links"]["links"]


def test_auth_failed_status_is_exposed():
    assert S.LLMLINK_AUTH_FAILED == 0x5010B10A
    assert S.LLMLINK_AUTH_FAILED.name == "LLMLINK_AUTH_FAILED"


def test_same_key_file_links(tmp_path, start_peer, make_decoder):
    key = key_file(tmp_path, "key", os.urandom(32))
    peer = start_peer(1, opts=[f"llmlink.AuthKeyFile={key}"])
    decoder = make_decoder(options={"llmlink.AuthKeyFile": key})
    ret, rets = decoder.link_clusters([cluster_to(peer)], 5000)
    assert (ret, rets) == (S.LLM_SUCCESS, [S.LLM_SUCCESS])
    decoder.check_link_status(peer.cluster_id)
    assert peer_links(peer) == 1


def test_wrong_key_fails_with_auth_failed(tmp_path, start_peer, make_decoder):
    peer = start_peer(1, opts=[f"llmlink.AuthKeyFile={key_file(tmp_path, 'a', os.urandom(32))}"])
    decoder = make_decoder(options={"llmlink.AuthKeyFile": key_file(tmp_path, "b", os.urandom(32))})
    ret, rets = decoder.link_clusters([cluster_to(peer)], 5000)
    assert (ret, rets) == (S.LLM_LINK_FAILED, [S.LLMLINK_AUTH_FAILED])
    assert type(rets[0]) is S
    assert peer_links(peer) == 0
    with pytest.raises(LLMException) as e:
        decoder.check_link_status(peer.cluster_id)
    assert e.value.status_code == S.LLM_NOT_YET_LINK


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = key_file(tmp_path, "open", os.urandom(32), mode=0o644)
    config = LLMConfig()
    config.ge_options = {"llmlink.AuthKeyFile": path}
    engine = LLMDataDist(LLMRole.DECODER, 100)
    try:
        with pytest.raises(LLMException) as e:
            engine.init(config.generate_options())
        assert e.value.status_code == S.LLM_PARAM_INVALID
        assert path in str(e.value)
    finally:
        engine.finalize()
