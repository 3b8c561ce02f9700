import sys

from services.accounts.app import MIGRATIONS, create_app
from services.accounts.commands import COMMANDS
from services.accounts.settings import AccountsSettings
from shared.cli import main

sys.exit(main("accounts", AccountsSettings, create_app, MIGRATIONS, COMMANDS))
