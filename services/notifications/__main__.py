import sys

from services.notifications.app import MIGRATIONS, create_app
from services.notifications.settings import NotificationsSettings
from shared.cli import main

sys.exit(main("notifications", NotificationsSettings, create_app, MIGRATIONS))
