"""The policy file: loading, defaults, precise errors and the version hash."""

import hashlib
import re
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from shared.policy import Policy, PolicyError, UnknownRoleError, load_policy, parse_policy

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy" / "policy.toml"
SOURCE = "policy/policy.toml"

# A small complete policy. Edits below replace one exact fragment, so each test changes one thing.
BASE = """\
version = "test.1"

[trigger]
priority = "P1"
access_type = "privileged"
max_duration = "PT2H"

[timings]
approval_due = "PT15M"
default_proof_deadline = "PT10M"

[itsm.servicenow]
enabled = true
priority_map = { "1" = "P1", "2" = "P2" }
major_incident_values = ["accepted"]

[itsm.jira]
enabled = false
priority_map = { "Highest" = "P1" }

[itsm.jira.field_map]
access_role = "customfield_10050"
access_type = "customfield_10051"
access_duration = "customfield_10052"

[[roles]]
name = "Global Administrator"
template_id = "62e90394-69f5-4237-9190-012177145e10"
tier = "high"
approval = "two_person"
max_duration = "PT1H"
required_probes = ["pim_instance", "unified_assignment", "directory_role_member"]

[[roles]]
name = "Exchange Administrator"
template_id = "29232cdf-9323-42fd-ade2-1d097af3e4de"
tier = "standard"
approval = "major_incident_window"
max_duration = "PT2H"
proof_deadline = "PT15M"
required_probes = ["pim_instance", "exchange_role_group"]

[approver_groups.on_call_lead]
group_id = "00000000-0000-0000-0000-000000000001"
display_name = "On-call lead"
teams_conversation_id = "19:lead@thread.tacv2"

[approver_groups.iam_duty_manager]
group_id = "00000000-0000-0000-0000-000000000002"
display_name = "IAM duty manager"
teams_conversation_id = "19:iam@thread.tacv2"

[approver_groups.security_lead]
group_id = "00000000-0000-0000-0000-000000000003"
display_name = "Security lead"
teams_conversation_id = "19:sec@thread.tacv2"

[roster]
provider = "entra_group"
group_id = "00000000-0000-0000-0000-000000000004"

[escalation]
iam_conversation_id = "19:iam-on-call@thread.tacv2"
"""

# The same policy as BASE: keys and tables reordered, comments and whitespace added, inline tables written
# out, defaults spelled out, durations and GUIDs written differently but meaning the same.
BASE_REWRITTEN = """\
# A comment that changes nothing.
version = 'test.1'

[escalation]
iam_conversation_id    =    "19:iam-on-call@thread.tacv2"   # trailing comment

[roster]
group_id = "00000000-0000-0000-0000-000000000004"
provider = "entra_group"

[approver_groups.security_lead]
teams_conversation_id = "19:sec@thread.tacv2"
display_name = "Security lead"
group_id = "00000000-0000-0000-0000-000000000003"

[approver_groups.iam_duty_manager]
display_name = "IAM duty manager"
group_id = "00000000-0000-0000-0000-000000000002"
teams_conversation_id = "19:iam@thread.tacv2"

[approver_groups.on_call_lead]
group_id = "00000000-0000-0000-0000-000000000001"
teams_conversation_id = "19:lead@thread.tacv2"
display_name = "On-call lead"

[approval]
two_person_groups = ["on_call_lead", "iam_duty_manager"]
break_glass_groups = ["iam_duty_manager", "security_lead"]

[[roles]]
required_probes = [
    "pim_instance",
    "unified_assignment",
    "directory_role_member",
]
max_duration = "PT60M"
approval = "two_person"
tier = "high"
template_id = "62E90394-69F5-4237-9190-012177145E10"
name = "Global Administrator"
revoke_sessions = true

[[roles]]
name = "Exchange Administrator"
template_id = "29232cdf-9323-42fd-ade2-1d097af3e4de"
tier = "standard"
approval = "major_incident_window"
max_duration = "P0DT2H"
proof_deadline = "PT900S"
required_probes = ["pim_instance", "exchange_role_group"]

[itsm.jira]
enabled = false
priority_map = { "Highest" = "P1" }

[itsm.jira.field_map]
access_duration = "customfield_10052"
access_type = "customfield_10051"
access_role = "customfield_10050"

[itsm.servicenow]
major_incident_values = ["accepted"]
priority_map.2 = "P2"
priority_map.1 = "P1"
enabled = true

[timings]
default_proof_deadline = "PT600S"
approval_reminder = "PT7M30S"
approval_due = "PT900S"

[trigger]
max_duration = "PT120M"
access_type = "privileged"
priority = "P1"
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"fragment must occur exactly once: {old!r}"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, SOURCE)
    assert list(caught.value.problems) == str(caught.value).splitlines()
    return list(caught.value.problems)


def only_problem_of(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- loading -----------------------------------------------------------------------------------------


def test_repo_policy_file_loads():
    policy = load_policy(REPO_POLICY)
    assert policy.role_names == (
        "Global Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
        "Security Administrator",
    )
    assert policy.enabled_itsm == ("servicenow", "jira")
    assert set(policy.itsm) == {"servicenow", "jira", "ivanti", "xurrent"}
    assert policy.roster.provider == "entra_group"
    assert policy.trigger.max_duration == timedelta(hours=2)
    assert policy.role("Exchange Administrator").required_probes[-1] == "exchange_role_group"


def test_repo_policy_roles_use_the_well_known_template_ids():
    policy = load_policy(REPO_POLICY)
    assert {role.name: role.template_id for role in policy.roles} == {
        "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
        "Exchange Administrator": "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "SharePoint Administrator": "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "Security Administrator": "194ae4cb-b126-40b2-bd5b-6091b380977d",
    }


def test_base_policy_loads_with_defaults_filled_in():
    policy = parse_policy(BASE)
    assert policy.limits.max_body_bytes == 262144
    assert policy.limits.webhook_clock_skew == timedelta(minutes=5)
    assert policy.timings.approval_reminder == timedelta(minutes=7, seconds=30)
    assert policy.timings.progress_interval == timedelta(minutes=2)
    assert policy.approval.two_person_groups == ("on_call_lead", "iam_duty_manager")
    assert policy.approval.break_glass_groups == ("iam_duty_manager", "security_lead")
    assert policy.itsm["servicenow"].state_labels.pending_approval == "Access pending (approval)"
    assert policy.itsm["servicenow"].state_labels.revoked == "Access revoked"
    assert policy.itsm["servicenow"].field_map == {}


def test_high_tier_roles_default_to_session_revocation_and_responder_confirmation():
    policy = parse_policy(BASE)
    high = policy.role("Global Administrator")
    standard = policy.role("Exchange Administrator")
    assert (high.revoke_sessions, high.responder_confirmation) == (True, True)
    assert (standard.revoke_sessions, standard.responder_confirmation) == (False, False)


def test_role_without_proof_deadline_takes_the_timings_default():
    policy = parse_policy(edit('default_proof_deadline = "PT10M"', 'default_proof_deadline = "PT20M"'))
    assert policy.role("Global Administrator").proof_deadline == timedelta(minutes=20)
    assert policy.role("Exchange Administrator").proof_deadline == timedelta(minutes=15)


def test_seconds_level_timings_are_accepted_for_tests():
    text = edit(
        '[timings]\napproval_due = "PT15M"\ndefault_proof_deadline = "PT10M"',
        '[timings]\napproval_due = "PT2S"\ndefault_proof_deadline = "PT3S"\nprogress_interval = "PT1S"\n'
        'slow_probe_interval = "PT2S"\nstore_mismatch_threshold = "PT2S"\nsweep_interval = "PT5S"\n'
        'pim_minimum_active = "PT1S"',
    )
    policy = parse_policy(text)
    assert policy.timings.approval_due == timedelta(seconds=2)
    assert policy.timings.approval_reminder == timedelta(seconds=1)
    assert policy.timings.pim_minimum_active == timedelta(seconds=1)
    assert policy.role("Global Administrator").proof_deadline == timedelta(seconds=3)


def test_unknown_role_lists_the_allowed_roles():
    policy = parse_policy(BASE)
    with pytest.raises(UnknownRoleError) as caught:
        policy.role("Billing Administrator")
    assert str(caught.value) == (
        "role 'Billing Administrator' is not allowed by the policy "
        "(allowed: Global Administrator, Exchange Administrator)"
    )
    assert isinstance(caught.value, LookupError)
    assert caught.value.role == "Billing Administrator"


def test_policy_is_immutable():
    policy = parse_policy(BASE)
    with pytest.raises(pydantic.ValidationError):
        policy.version = "other"


def test_missing_file_is_reported_with_its_name(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=re.escape(f"{missing}: policy file not found")):
        load_policy(missing)


def test_load_policy_names_the_file_in_errors(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(edit('tier = "standard"', 'tier = "critical"'), encoding="utf-8")
    with pytest.raises(PolicyError, match=re.escape(f"{path}: roles[1].tier = 'critical'")):
        load_policy(path)


# --- hash --------------------------------------------------------------------------------------------


def test_version_hash_is_sha256_of_the_canonical_json():
    policy = parse_policy(BASE)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", policy.version_hash)
    assert policy.version_hash == parse_policy(BASE).version_hash


def test_version_hash_ignores_key_order_comments_whitespace_and_equivalent_spellings():
    assert parse_policy(BASE_REWRITTEN).version_hash == parse_policy(BASE).version_hash


def test_canonical_json_is_compact_with_sorted_keys():
    canonical = parse_policy(BASE).canonical_json()
    assert ": " not in canonical and ", " not in canonical.replace('", "', "")
    assert canonical.startswith('{"approval":')
    assert '"max_duration":"PT2H"' in canonical


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('version = "test.1"', 'version = "test.2"'),
        ('max_duration = "PT1H"', 'max_duration = "PT59M"'),
        ('tier = "standard"\napproval = "major_incident_window"', 'tier = "high"\napproval = "two_person"'),
        ('approval = "major_incident_window"', 'approval = "two_person"'),
        ('approval_due = "PT15M"', 'approval_due = "PT16M"'),
        ("000000000001", "000000000009"),
        ('"19:sec@thread.tacv2"', '"19:sec2@thread.tacv2"'),
        ('major_incident_values = ["accepted"]', 'major_incident_values = ["accepted", "proposed"]'),
        ('"2" = "P2"', '"2" = "P1"'),
        ("[itsm.jira]\nenabled = false", "[itsm.jira]\nenabled = true"),
        ('"exchange_role_group"]', '"exchange_role_group", "responder_check"]'),
        ("[escalation]", "[limits]\nmax_body_bytes = 1024\n\n[escalation]"),
        ("[escalation]", "[itsm.servicenow.state_labels]\nrevoked = 'Access removed'\n\n[escalation]"),
        ('required_probes = ["pim_instance", "exchange_role_group"]', 'required_probes = ["pim_instance"]'),
        ("[escalation]", "[circuit_breaker]\nfailures = 3\n\n[escalation]"),
        ("[escalation]", "[circuit_breaker]\nopen_for = 'PT2M'\n\n[escalation]"),
    ],
)
def test_version_hash_changes_with_any_semantic_change(old, new):
    changed = parse_policy(edit(old, new))
    assert changed.version_hash != parse_policy(BASE).version_hash


# --- errors ------------------------------------------------------------------------------------------


def test_mistyped_key_names_the_key_value_and_suggests_the_right_one():
    problems = problems_of(edit('access_type = "privileged"', 'acces_type = "privileged"'))
    assert f"{SOURCE}: trigger.access_type: missing required key" in problems
    assert (
        f"{SOURCE}: trigger.acces_type = 'privileged': unknown key (did you mean 'access_type'?) "
        "(allowed: access_type, max_duration, priority)"
    ) in problems


def test_mistyped_table_name_is_an_unknown_table():
    problem = only_problem_of(edit("[timings]", "[timing]"))
    assert problem.startswith(f"{SOURCE}: timing: unknown table (did you mean 'timings'?)")


def test_bad_tier_names_the_key_value_and_allowed_values():
    assert only_problem_of(edit('tier = "standard"', 'tier = "critical"')) == (
        f"{SOURCE}: roles[1].tier = 'critical': must be one of 'high', 'standard'"
    )


def test_bad_guid_names_the_key_and_value():
    problem = only_problem_of(edit("000000000002", "00000000000Z"))
    assert problem.startswith(
        f"{SOURCE}: approver_groups.iam_duty_manager.group_id = '00000000-0000-0000-0000-00000000000Z': "
        "must be a GUID"
    )


def test_duration_syntax_error_names_the_key_value_and_expected_form():
    problem = only_problem_of(edit('approval_due = "PT15M"', 'approval_due = "15 minutes"'))
    assert problem.startswith(f"{SOURCE}: timings.approval_due = '15 minutes': expected an ISO 8601 duration")
    assert "PnDTnHnMnS" in problem


def test_duration_given_as_a_number_is_refused():
    problem = only_problem_of(edit('approval_due = "PT15M"', "approval_due = 900"))
    assert problem.startswith(f"{SOURCE}: timings.approval_due = 900: must be a duration string")


def test_zero_timing_is_refused():
    problem = only_problem_of(
        edit('approval_due = "PT15M"', 'approval_due = "PT15M"\nsweep_interval = "PT0S"')
    )
    assert problem == f"{SOURCE}: timings.sweep_interval = 'PT0S': must be longer than zero"


def test_reminder_not_before_due_is_refused():
    problem = only_problem_of(
        edit('approval_due = "PT15M"', 'approval_due = "PT15M"\napproval_reminder = "PT15M"')
    )
    assert (
        problem
        == f"{SOURCE}: timings.approval_reminder = 'PT15M': must be shorter than approval_due ('PT15M')"
    )


def test_proof_deadline_not_before_max_duration_is_refused():
    problem = only_problem_of(edit('proof_deadline = "PT15M"', 'proof_deadline = "PT2H"'))
    assert problem.startswith(
        f"{SOURCE}: roles[1].proof_deadline = 'PT2H': must be shorter than max_duration ('PT2H')"
    )


def test_default_proof_deadline_longer_than_a_role_is_reported_on_that_role():
    problem = only_problem_of(edit('default_proof_deadline = "PT10M"', 'default_proof_deadline = "PT1H"'))
    assert problem.startswith(
        f"{SOURCE}: roles[0].proof_deadline = 'PT1H': must be shorter than max_duration"
    )
    assert "timings.default_proof_deadline" in problem


def test_role_max_duration_above_trigger_max_is_refused():
    problem = only_problem_of(edit('max_duration = "PT1H"', 'max_duration = "PT3H"'))
    assert (
        problem == f"{SOURCE}: roles[0].max_duration = 'PT3H': must not exceed trigger.max_duration ('PT2H')"
    )


def test_unknown_approver_group_reference_lists_the_known_groups():
    text = edit(
        "[escalation]", '[approval]\ntwo_person_groups = ["oncall_lead", "iam_duty_manager"]\n\n[escalation]'
    )
    assert only_problem_of(text) == (
        f"{SOURCE}: approval.two_person_groups references unknown approver group 'oncall_lead' "
        "(known: iam_duty_manager, on_call_lead, security_lead)"
    )


def test_two_person_groups_must_be_two_distinct_groups():
    text = edit(
        "[escalation]", '[approval]\ntwo_person_groups = ["on_call_lead", "on_call_lead"]\n\n[escalation]'
    )
    problem = only_problem_of(text)
    assert problem.startswith(
        f"{SOURCE}: approval.two_person_groups[1] = 'on_call_lead': duplicate approver group"
    )


def test_approver_groups_must_be_different_entra_groups():
    problem = only_problem_of(edit("000000000003", "000000000002"))
    assert problem.startswith(
        f"{SOURCE}: approver_groups.security_lead.group_id = '00000000-0000-0000-0000-000000000002': "
        "same Entra group as approver_groups.iam_duty_manager"
    )


def test_duplicate_role_name_is_refused():
    problem = only_problem_of(edit('name = "Exchange Administrator"', 'name = "Global Administrator"'))
    assert problem == f"{SOURCE}: roles[1].name = 'Global Administrator': duplicate role name (also roles[0])"


def test_duplicate_template_id_is_refused():
    global_admin = "62e90394-69f5-4237-9190-012177145e10"
    problem = only_problem_of(edit("29232cdf-9323-42fd-ade2-1d097af3e4de", global_admin))
    assert problem.startswith(f"{SOURCE}: roles[1].template_id = '{global_admin}': duplicate template_id")


def test_high_tier_role_may_choose_the_major_incident_window():
    text = edit('tier = "high"\napproval = "two_person"', 'tier = "high"\napproval = "major_incident_window"')
    assert parse_policy(text, SOURCE).roles[0].approval == "major_incident_window"


def test_approval_path_defaults_by_tier():
    text = edit('tier = "high"\napproval = "two_person"', 'tier = "high"')
    text = text.replace('approval = "major_incident_window"\n', "", 1)
    policy = parse_policy(text, SOURCE)
    assert [role.approval for role in policy.roles[:2]] == ["two_person", "major_incident_window"]


def test_unknown_probe_is_refused_with_a_suggestion():
    problem = only_problem_of(edit('"exchange_role_group"]', '"exchange_rolegroup"]'))
    assert problem.startswith(f"{SOURCE}: roles[1].required_probes[1] = 'exchange_rolegroup': must be one of")
    assert "(did you mean 'exchange_role_group'?)" in problem


def test_empty_required_probes_is_refused():
    problem = only_problem_of(
        edit('required_probes = ["pim_instance", "exchange_role_group"]', "required_probes = []")
    )
    assert problem.startswith(f"{SOURCE}: roles[1].required_probes: must name at least one probe")


def test_wrong_roster_parameter_for_the_provider_is_refused():
    problems = problems_of(edit('provider = "entra_group"', 'provider = "pagerduty"'))
    assert problems == [
        f"{SOURCE}: roster.group_id = '00000000-0000-0000-0000-000000000004': "
        "not used by provider 'pagerduty' (it takes schedule_ids)",
        f"{SOURCE}: roster.schedule_ids: missing required key: provider 'pagerduty' needs schedule_ids",
    ]


def test_pagerduty_roster_with_schedule_ids_loads():
    text = edit(
        'provider = "entra_group"\ngroup_id = "00000000-0000-0000-0000-000000000004"',
        'provider = "pagerduty"\nschedule_ids = ["PABC123"]',
    )
    assert parse_policy(text).roster.schedule_ids == ("PABC123",)


def test_unknown_itsm_system_is_refused():
    problem = only_problem_of(
        edit(
            "[approver_groups.on_call_lead]",
            "[itsm.remedy]\nenabled = false\n\n[approver_groups.on_call_lead]",
        )
    )
    assert problem == (
        f"{SOURCE}: itsm: invalid key 'remedy': must be one of 'servicenow', 'jira', 'ivanti', 'xurrent'"
    )


def test_unknown_canonical_field_in_field_map_is_refused():
    problem = only_problem_of(edit('access_role = "customfield_10050"', 'acess_role = "customfield_10050"'))
    assert problem.startswith(f"{SOURCE}: itsm.jira.field_map: invalid key 'acess_role': must be one of")
    assert "(did you mean 'access_role'?)" in problem


def test_enabled_itsm_must_map_the_access_fields():
    text = edit("[itsm.jira]\nenabled = false", "[itsm.jira]\nenabled = true")
    text = edit('access_type = "customfield_10051"\naccess_duration = "customfield_10052"\n', "", text)
    assert only_problem_of(text) == (
        f"{SOURCE}: itsm.jira.field_map: must map access_type, access_duration for an enabled ITSM "
        "(to the ticket field that holds each)"
    )


def test_enabled_itsm_must_map_some_value_to_the_trigger_priority():
    problem = only_problem_of(
        edit('priority_map = { "1" = "P1", "2" = "P2" }', 'priority_map = { "2" = "P2" }')
    )
    assert problem.startswith(
        f"{SOURCE}: itsm.servicenow.priority_map: maps no value to the trigger priority 'P1'"
    )


def test_toml_syntax_error_names_the_file_and_line():
    text = edit('tier = "standard"', "tier = standard")
    line = text.splitlines().index("tier = standard") + 1
    problem = only_problem_of(text)
    assert problem.startswith(f"{SOURCE}: invalid TOML: ")
    assert f"line {line}" in problem


def test_several_problems_are_reported_together_one_per_line():
    text = edit('tier = "standard"', 'tier = "critical"')
    text = edit('approval_due = "PT15M"', 'approval_due = "soon"', text)
    text = edit('iam_conversation_id = "19:iam-on-call@thread.tacv2"', "", text)
    problems = problems_of(text)
    assert problems == [
        f"{SOURCE}: timings.approval_due = 'soon': expected an ISO 8601 duration of the form PnDTnHnMnS, "
        "e.g. 'PT2H', 'PT10M', 'PT5S', 'P1DT2H', 'PT0.5S'",
        f"{SOURCE}: roles[1].tier = 'critical': must be one of 'high', 'standard'",
        f"{SOURCE}: escalation.iam_conversation_id: missing required key",
    ]


def test_wrong_value_type_says_what_type_is_expected():
    assert only_problem_of(edit("[itsm.jira]\nenabled = false", '[itsm.jira]\nenabled = "no"')) == (
        f"{SOURCE}: itsm.jira.enabled = 'no': must be true or false"
    )


def test_no_pydantic_details_reach_the_user():
    with pytest.raises(PolicyError) as caught:
        parse_policy(edit('tier = "standard"', 'tier = "critical"'), SOURCE)
    error = caught.value
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert "pydantic" not in str(error)
    assert "Input should" not in str(error)
    assert not isinstance(error, pydantic.ValidationError)


def test_policy_model_validates_directly_too():
    # The cross-field checks live in the models, so building a Policy without the loader is checked as well.
    with pytest.raises(pydantic.ValidationError):
        Policy.model_validate({})


def test_file_hash_is_the_sha256_of_the_exact_file_bytes():
    policy = load_policy(REPO_POLICY)
    assert policy.file_hash == "sha256:" + hashlib.sha256(REPO_POLICY.read_bytes()).hexdigest()
    reformatted = parse_policy(REPO_POLICY.read_text() + "\n# a comment\n", SOURCE)
    assert reformatted.file_hash != policy.file_hash
    assert reformatted.version_hash == policy.version_hash


def test_role_lookup_ignores_case():
    policy = parse_policy(BASE)
    assert policy.role("exchange ADMINISTRATOR").name == "Exchange Administrator"
    with pytest.raises(UnknownRoleError):
        policy.role("Exchange Admin")


# --- circuit breaker ---------------------------------------------------------------------------------

BREAKER = "[escalation]", "[circuit_breaker]\n{}\n\n[escalation]"


def with_breaker(lines: str) -> str:
    return edit(BREAKER[0], BREAKER[1].format(lines))


def test_circuit_breaker_defaults_to_five_failures_and_one_minute():
    breaker = parse_policy(BASE).circuit_breaker
    assert (breaker.failures, breaker.open_for) == (5, timedelta(minutes=1))
    assert parse_policy(with_breaker("failures = 5\nopen_for = 'PT60S'")).version_hash == (
        parse_policy(BASE).version_hash
    )


def test_repo_policy_spells_out_the_circuit_breaker():
    assert "[circuit_breaker]" in REPO_POLICY.read_text()
    breaker = load_policy(REPO_POLICY).circuit_breaker
    assert (breaker.failures, breaker.open_for) == (5, timedelta(minutes=1))


def test_circuit_breaker_seconds_are_accepted_for_tests():
    breaker = parse_policy(with_breaker("failures = 2\nopen_for = 'PT0.5S'")).circuit_breaker
    assert (breaker.failures, breaker.open_for) == (2, timedelta(milliseconds=500))


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("failures = 0", "circuit_breaker.failures = 0: must be greater than 0"),
        ("failures = '5'", "circuit_breaker.failures = '5': must be an integer"),
        ("failures = 2.5", "circuit_breaker.failures = 2.5: must be an integer"),
        ("open_for = 'PT0S'", "circuit_breaker.open_for = 'PT0S': must be longer than zero"),
        ("open_for = 60", "circuit_breaker.open_for = 60: must be a duration string"),
    ],
)
def test_bad_circuit_breaker_values_name_the_key_and_reason(lines, problem):
    assert only_problem_of(with_breaker(lines)).startswith(f"{SOURCE}: {problem}")


def test_mistyped_circuit_breaker_key_suggests_the_right_one():
    problem = only_problem_of(with_breaker("failure = 3"))
    assert problem == (
        f"{SOURCE}: circuit_breaker.failure = 3: unknown key (did you mean 'failures'?) "
        "(allowed: failures, open_for)"
    )
