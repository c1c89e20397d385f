-- One database per service (services keep their own data: docs/database.md); several
-- instances of a service share its database. Run once by the postgres image at first
-- start (/docker-entrypoint-initdb.d). Tables come from each service's migrations.
CREATE DATABASE orders;
CREATE DATABASE stock;
CREATE DATABASE payments;
CREATE DATABASE kitchen;
CREATE DATABASE gateway;
