import sys

from services.customers.app import MIGRATIONS, create_app
from services.customers.settings import CustomersSettings
from shared.cli import main

sys.exit(main("customers", CustomersSettings, create_app, MIGRATIONS))
