-- One database per service, created when the PostgreSQL data volume is initialised for the first time
-- (the postgres image runs /docker-entrypoint-initdb.d/ only then). The services would also create their own
-- database if it were missing, and they apply their migrations at every start: this script only makes the
-- layout explicit. The names are the services' defaults (see services/*/settings.py).
CREATE DATABASE coworking_customers;
CREATE DATABASE coworking_accounts;
CREATE DATABASE coworking_visitors;
CREATE DATABASE coworking_notifications;
