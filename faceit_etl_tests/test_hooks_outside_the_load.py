"""Some of our writes commit outside the load's transaction: the log row's start and its failure. A
trigger or rule on our bookkeeping tables would commit its own changes unverified, so the run is
refused before it writes anything.
"""

from __future__ import annotations

import pytest

from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_dry_run import database_state

HOOK = ("CREATE FUNCTION public.ml() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE public.users "
        "SET faceit_nickname = 'ml_' || TG_OP WHERE user_id = 1005; RETURN NULL; END $$")
REFUSED = "refusing to load: {what} would act on faceit-etl's own bookkeeping writes"
HOOKS = {
    "trigger on INSERT": ("CREATE TRIGGER tml AFTER INSERT ON public.migration_logs FOR EACH ROW EXECUTE FUNCTION public.ml()",
                          "trigger tml on public.migration_logs"),
    "trigger on UPDATE": ("CREATE TRIGGER tml AFTER UPDATE ON public.migration_logs FOR EACH STATEMENT EXECUTE FUNCTION public.ml()",
                          "trigger tml on public.migration_logs"),
    "rule on rejects": ("CREATE RULE rml AS ON INSERT TO public.migration_rejects DO ALSO "
                        "UPDATE public.users SET faceit_nickname = 'rule' WHERE user_id = 1005",
                        "rule rml on public.migration_rejects"),
}


def loaded(workdir, database_url):  # noqa: F811
    """Five users loaded by faceit-etl (so its bookkeeping tables exist), and a file without user 1005."""
    source = write_json(workdir / "f1.json", {"users": [{"user_id": 1000 + i, "faceit_nickname": f"n{i}"} for i in range(1, 6)]})
    assert faceit_etl(workdir, database_url, "migrate", str(source)).returncode == 0
    return write_json(source, {"users": [{"user_id": 1001, "faceit_nickname": "renamed"}, {"user_id": "bad"}]})


@pytest.mark.parametrize("hook", HOOKS)
def test_a_trigger_or_rule_on_our_bookkeeping_refuses_the_run_before_any_write(workdir, database_url, db, hook):  # noqa: F811
    source = loaded(workdir, database_url)
    db.execute(HOOK)
    create, what = HOOKS[hook]
    db.execute(create)
    before = database_state(db)

    done = faceit_etl(workdir, database_url, "migrate", str(source), "--force")

    assert done.returncode == 1, done.stdout + done.stderr
    assert REFUSED.format(what=what) in done.stdout
    assert database_state(db) == before  # no log row, no reject, user 1005 untouched
