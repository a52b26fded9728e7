"""Two-process links: link, check, unlink with and without force, and link
outcomes that come back in the (ret, rets) tuple."""
import socket
import time

import pytest

from conftest import cluster_to
from llmlink import (LLMClusterInfo, LLMConfig, LLMDataDist, LLMException, LLMRole,
                     LLMStatusCode)

S = LLMStatusCode


def wait_for(predicate, timeout_s=10.0, step_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def peer_links(peer):
    return peer.request("stats")["links"]["links"]


def unused_port():
    # Bound and closed: nobody listens there for the test's short life.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_link_returns_statuses_and_check_sees_it(linked):
    decoder, peer = linked
    assert decoder.check_link_status(peer.cluster_id) is None
    assert peer_links(peer) == 1
    ret, rets = decoder.link_clusters([cluster_to(peer)], 5000)
    assert (ret, rets) == (S.LLM_LINK_FAILED, [S.LLM_ALREADY_LINK])
    assert type(ret) is S and all(type(r) is S for r in rets)


def test_link_to_several_peers(make_decoder, start_peer):
    peers = [start_peer(cid) for cid in (11, 12, 13)]
    decoder = make_decoder()
    ret, rets = decoder.link_clusters(tuple(cluster_to(p) for p in peers), 5000)
    assert ret == S.LLM_SUCCESS and rets == [S.LLM_SUCCESS] * 3
    for p in peers:
        decoder.check_link_status(p.cluster_id)


def test_unlink_without_force_frees_both_ends(linked):
    decoder, peer = linked
    ret, rets = decoder.unlink_clusters([cluster_to(peer)], timeout=3000, force=False)
    assert (ret, rets) == (S.LLM_SUCCESS, [S.LLM_SUCCESS])
    # The peer acknowledged before unlink returned: its end is gone already.
    assert peer_links(peer) == 0
    with pytest.raises(LLMException) as e:
        decoder.check_link_status(peer.cluster_id)
    assert e.value.status_code == S.LLM_NOT_YET_LINK


def test_unlink_with_force_frees_the_local_end_and_the_peer_notices(linked):
    decoder, peer = linked
    ret, rets = decoder.unlink_clusters([cluster_to(peer)], force=True)
    assert (ret, rets) == (S.LLM_SUCCESS, [S.LLM_SUCCESS])
    with pytest.raises(LLMException):
        decoder.check_link_status(peer.cluster_id)
    assert wait_for(lambda: peer_links(peer) == 0), "the peer kept its end of the link"


def test_relink_after_unlink(linked):
    decoder, peer = linked
    assert decoder.unlink_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS
    assert decoder.link_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS
    decoder.check_link_status(peer.cluster_id)


def test_unlink_of_no_link_is_an_outcome(make_decoder):
    decoder = make_decoder()
    ret, rets = decoder.unlink_clusters([cluster_to(unused_port(), 77)])
    assert (ret, rets) == (S.LLM_UNLINK_FAILED, [S.LLM_NOT_YET_LINK])


def test_prompt_side_unlinks_the_decoder(linked):
    decoder, peer = linked
    reply = peer.request("unlink", clusters=[decoder.cluster_id], force=False)
    assert reply["ret"] == "LLM_SUCCESS" and reply["rets"] == ["LLM_SUCCESS"]
    assert wait_for(lambda: _unlinked(decoder, peer.cluster_id))


def _unlinked(decoder, cluster_id):
    try:
        decoder.check_link_status(cluster_id)
        return False
    except LLMException as e:
        return e.status_code == S.LLM_NOT_YET_LINK


def test_failed_links_come_back_in_the_tuple(make_decoder, peer):
    decoder = make_decoder()
    nobody = cluster_to(unused_port(), 42)
    ret, rets = decoder.link_clusters([cluster_to(peer), nobody], 2000)
    assert ret == S.LLM_LINK_FAILED
    assert rets[0] == S.LLM_SUCCESS
    assert rets[1] in (S.LLM_LINK_FAILED, S.LLM_TIMEOUT)
    decoder.check_link_status(peer.cluster_id)  # the one that linked stays linked


def test_wrong_cluster_id_is_an_outcome(make_decoder, peer):
    decoder = make_decoder()
    ret, rets = decoder.link_clusters([cluster_to(peer.port, 999)], 3000)
    assert ret == S.LLM_LINK_FAILED
    assert rets == [S.LLMLINK_CLUSTER_ID_MISMATCH]


def test_more_than_16_clusters_is_an_outcome(make_decoder):
    decoder = make_decoder()
    clusters = [cluster_to(1000 + i, i) for i in range(17)]
    ret, rets = decoder.link_clusters(clusters, 1000)
    assert ret == S.LLM_CLUSTER_NUM_EXCEED_LIMIT
    assert rets == [S.LLM_CLUSTER_NUM_EXCEED_LIMIT] * 17


def test_prompt_engine_may_not_link(peer):
    prompt = LLMDataDist(LLMRole.PROMPT, 5)
    config = LLMConfig()
    config.listen_ip_info = "127.0.0.1:0"
    prompt.init(config.generate_options())
    try:
        ret, rets = prompt.link_clusters([cluster_to(peer)])
        assert (ret, rets) == (S.LLMLINK_ROLE_NOT_ALLOWED, [S.LLMLINK_ROLE_NOT_ALLOWED])
    finally:
        prompt.finalize()


def test_remote_role_type_is_enforced(make_decoder, peer):
    decoder = make_decoder()
    wrong = cluster_to(peer)
    wrong.remote_role_type = LLMRole.MIX
    ret, rets = decoder.link_clusters([wrong], 3000)
    assert ret == S.LLM_LINK_FAILED and rets[0] != S.LLM_SUCCESS, rets
    right = cluster_to(peer)
    right.remote_role_type = LLMRole.PROMPT
    assert decoder.link_clusters([right], 3000)[0] == S.LLM_SUCCESS


def test_finalize_closes_links_and_is_idempotent(make_decoder, peer):
    decoder = make_decoder()
    assert decoder.link_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS
    decoder.finalize()
    decoder.finalize()
    assert wait_for(lambda: peer_links(peer) == 0)
    with pytest.raises(RuntimeError):
        decoder.check_link_status(peer.cluster_id)
    decoder.init({})  # a new engine, as llm_datadist allows
    assert decoder.link_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS


def test_int_ip_is_little_endian_ipv4():
    info = LLMClusterInfo()
    info.append_local_ip_info(0x0100007F, 26000)  # 127.0.0.1
    info.append_remote_ip_info("::1", 0)
    assert info.local_ip_info_list == [("127.0.0.1", 26000)]
    assert info.remote_ip_info_list == [("::1", 0)]


def test_config_generates_the_c_option_keys():
    config = LLMConfig()
    config.listen_ip_info = "127.0.0.1:0"
    config.sync_kv_timeout = 2500
    config.device_id = [0, 1]
    config.enable_cache_manager = True
    config.link_retry_count = 3
    config.ge_options = {"llmlink.Transport": "tcp"}
    assert config.generate_options() == {
        "llm.listenIpInfo": "127.0.0.1:0", "llm.SyncKvCacheWaitTime": "2500",
        "ge.exec.deviceId": "0;1", "llm.EnableCacheManager": "1", "llm.LinkRetryCount": "3",
        "llmlink.Transport": "tcp",
    }
    assert config.sync_kv_timeout == 2500
    engine = LLMDataDist(LLMRole.PROMPT, 9)
    engine.init(config.generate_options())  # the engine takes every key
    engine.finalize()


def test_unlink_without_force_waits_for_the_peer_force_does_not(make_decoder, start_peer):
    waiting, forced = start_peer(21), start_peer(22)
    decoder = make_decoder()
    ret, _ = decoder.link_clusters([cluster_to(waiting), cluster_to(forced)], 5000)
    assert ret == S.LLM_SUCCESS
    waiting.pause()
    forced.pause()
    try:
        # Nobody answers: without force the call waits for the peer's
        # acknowledgement until its timeout, and says the peer was not told.
        ret, rets = decoder.unlink_clusters([cluster_to(waiting)], timeout=500, force=False)
        assert ret == S.LLM_UNLINK_FAILED
        assert rets == [S.LLM_NOTIFY_PROMPT_UNLINK_FAILED]
        # With force the local end goes at once, whatever the peer does.
        ret, rets = decoder.unlink_clusters([cluster_to(forced)], timeout=500, force=True)
        assert (ret, rets) == (S.LLM_SUCCESS, [S.LLM_SUCCESS])
    finally:
        waiting.resume()
        forced.resume()
    for peer in (waiting, forced):
        with pytest.raises(LLMException):
            decoder.check_link_status(peer.cluster_id)
        assert wait_for(lambda: peer_links(peer) == 0)
