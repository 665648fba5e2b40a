def test_each_test_gets_an_empty_database(db):
    tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
    assert db.execute("SELECT current_database()").fetchone()[0].startswith("test_")
