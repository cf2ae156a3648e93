#!/bin/bash
# v1 for the compose try-out: the account `cdc-bridge source` reads with. The
# mysql image runs this once, when it initialises an empty data directory
# (mounted into /docker-entrypoint-initdb.d/). It may be sourced by the image's
# entrypoint instead of executed, so it neither exits nor changes shell options.
#
# REPLICATION SLAVE and REPLICATION CLIENT read the binlog, SELECT reads the
# snapshot, RELOAD lets the MySQL 8 snapshot take its brief FLUSH TABLES WITH
# READ LOCK. Kept out of the binlog, like every account change.

if [[ -z ${CDC_BRIDGE_MYSQL_PASSWORD:-} ]]; then
    echo "cdc-bridge init: CDC_BRIDGE_MYSQL_PASSWORD is not set" >&2
    false
else
    cdc_reader_password=${CDC_BRIDGE_MYSQL_PASSWORD//\\/\\\\}
    cdc_reader_password=${cdc_reader_password//\'/\'\'}
    MYSQL_PWD=$MYSQL_ROOT_PASSWORD mysql --protocol=socket -uroot <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'cdc_reader'@'%' IDENTIFIED BY '$cdc_reader_password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT ON *.* TO 'cdc_reader'@'%';
SQL
    unset cdc_reader_password
    echo "cdc-bridge init: account cdc_reader created"
fi
