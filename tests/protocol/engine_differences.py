"""The protocol tests that engine mode cannot pass, each with its reason."""

import pytest

#: test file -> {test name (without parameters): reason}; a name "*" covers the file.
#: README "Engine mode" lists the same differences for users.
JOURNAL = "tests the journal's files or read-behind; queues are in Redis's memory, no file or memory window"
SKIPS: dict[str, dict[str, str]] = {
    "test_queue_settings.py": {
        "test_max_memory_size_keeps_a_deep_queue_working_with_bounded_memory": JOURNAL,
        "test_draining_a_deep_queue_frees_segments_as_it_goes_with_few_journal_rewrites": JOURNAL,
        "test_max_journal_size_bounds_logsize_under_churn": JOURNAL,
        "test_every_per_queue_stats_field_is_present_with_sane_values":
            JOURNAL + " (mem_items counts every item, logsize is 0)",
    },
    "test_queue_flood.py": {
        # The fixture of 10,000 queues: each new queue costs ~5 round trips to Redis and
        # every sweep one pipelined script per queue, so filling it takes minutes here.
        "test_a_get_naming_5000_missing_queues_leaves_the_hub_to_others":
            "10,000 queues take minutes to create on an engine node (one sweep script per queue a second)",
        "test_stats_over_10000_queues_leaves_the_hub_to_others":
            "10,000 queues take minutes to create on an engine node (one sweep script per queue a second)",
        # Not xfail: it misses the 0.2 s bound by little, and not every time.
        "test_a_fanout_set_to_many_children_leaves_the_hub_to_others":
            "a fanout set is one atomic script (issue 13): 300 MiB to 300 children holds Redis, and so "
            "the node's other requests, ~0.25 s past the test's 0.2 s bound",
    },
}
#: Behaviour that differs on purpose: xfail(strict), so that a test that starts passing
#: is reported and taken off this list.
XFAILS: dict[str, dict[str, str]] = {}


def mark_differences(items) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/protocol/" not in path:
            continue
        module = path.rsplit("/", 1)[1]
        name = item.originalname
        for table, mark in ((SKIPS, pytest.mark.skip), (XFAILS, None)):
            reasons = table.get(module, {})
            reason = reasons.get(name) or reasons.get("*")
            if reason:
                item.add_marker(mark(reason=f"engine mode: {reason}") if mark
                                else pytest.mark.xfail(reason=f"engine mode: {reason}", strict=True))
