"""The seed page's link_clusters example, as written but for the import,
the addresses and the init call (see fixtures/seed_example.py)."""
import json
import os
import subprocess
import sys

import pytest

from fixtures.netns import own_netns_command

DRIVER = os.path.join(os.path.dirname(__file__), "fixtures", "run_seed_example.py")


def test_seed_example_links_to_a_prompt_engine_in_another_process():
    prefix = own_netns_command() or []
    run = subprocess.run(prefix + [sys.executable, DRIVER], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, result
    assert "link failed" not in result["stdout"], result
    assert result["handshakes_completed"] == 1, result


def test_fixture_is_the_seed_but_for_the_allowed_changes():
    seed = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "seeds",
                        "000_76d0871a64c0a43b.txt")
    if not os.path.isfile(seed):
        pytest.skip("shared/seeds is not beside this checkout")
    text = open(seed, encoding="utf-8").read()
    example = text[text.index("from llm_datadist import"):]
    example = example[:example.index("```")].strip().splitlines()
    fixture = [line for line in open(os.path.join(os.path.dirname(DRIVER), "seed_example.py"),
                                     encoding="utf-8").read().splitlines()
               if not line.startswith("#")]
    expected = [line.replace("from llm_datadist import", "from llmlink import")
                .replace('"1.1.1.1"', '"127.0.0.1"') for line in example]
    expected.insert(2, "llm_datadist.init({})")
    assert fixture == expected
