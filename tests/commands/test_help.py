import pytest
from django.core.management import load_command_class

COMMANDS = {
    "create_device": ("devices", ["--description", "--inactive", "--json", "shown only this once"]),
    "reconcile": ("reconciliation", ["--device UUID", "--all", "exit status"]),
    "rebuild_read_model": ("reconciliation", ["--device UUID", "--check", "exit 1 when the table has drifted"]),
    "drift_report": ("reconciliation", ["--format {table,json}", "exit status"]),
    "seed_demo": ("reconciliation", ["--devices N", "--sensors M", "press-line-1", "reconciling"]),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_explains_the_options_examples_and_exit_status(name):
    app, expected = COMMANDS[name]
    text = load_command_class(app, name).create_parser("manage.py", name).format_help()

    for fragment in [*expected, "examples:", "exit status:"]:
        assert fragment in text
