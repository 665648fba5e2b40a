"""Steps pass what they need through resources, outputs and structured events."""

from faceit_etl_tests.conftest import FLAT_SAMPLE, make_settings


def test_the_settings_resource_hands_out_connections_in_known_sessions(database_url, db, tmp_path):
    """Steps take connections from the resource, never a URL: the session settings are set, the block
    commits, and a database that cannot be reached is named without its password after bounded retries."""
    from faceit_etl.defs.resources import MigrationSettings
    from faceit_etl.postgres.database import CONNECT_ATTEMPTS, DatabaseUnavailable

    settings = make_settings(database_url, FLAT_SAMPLE, tmp_path)
    with settings.get_connection() as conn:
        assert conn.execute("SELECT current_setting('TimeZone'), current_setting('DateStyle')").fetchone() == ("UTC", "ISO, MDY")
        conn.execute("CREATE TABLE handed_out (n int)")
    assert db.execute("SELECT to_regclass('handed_out') IS NOT NULL").fetchone()[0]  # committed at the block's end

    dead = MigrationSettings(database_url="postgresql://bot:Hunter2secret@127.0.0.1:1/faceit")
    try:
        with dead.get_connection():
            raise AssertionError("connected to a closed port")
    except DatabaseUnavailable as refused:
        message = str(refused)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:1/faceit after {CONNECT_ATTEMPTS} attempts")
    assert "Hunter2secret" not in message
    assert dead.database_label() == "127.0.0.1:1/faceit"
