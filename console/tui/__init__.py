"""The Textual operator console: the only package of fleetscan that imports Textual.

Entry point: ``console.tui.app.run_console(db_path, workflows_file, agents_source)``
(``fleetscan`` / ``fleetscan tui``), or ``python -m console.tui.app --db PATH``.

Modules: ``app`` (the App: workers, master, actions), ``main_screen`` and ``panels``
(what the main screen draws), ``refresh`` (the refresh loop; what it reads are the store's
rows, ``console.store.rows``), ``keyed_table`` (tables diffed by key), ``new_run``,
``results_browser``, ``agents_screen`` with ``agent_ops``, ``dialogs``, ``intents`` (the
console's writes), ``formatting`` and ``app.tcss``. Nothing here speaks SQL: every read and
write goes through ``console.store``'s interface.
"""
