import sys

from services.visitors.app import MIGRATIONS, create_app
from services.visitors.settings import VisitorsSettings
from shared.cli import main

sys.exit(main("visitors", VisitorsSettings, create_app, MIGRATIONS))
