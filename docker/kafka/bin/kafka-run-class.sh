#!/bin/bash
# kafka-run-class.sh CLASS [ARGS...]: run a Kafka class with /opt/kafka/libs on the
# classpath. A reduced stand-in for the script of Apache Kafka's distribution:
# KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS and KAFKA_LOG4J_OPTS
# are honoured as there.
set -e
heap=${KAFKA_HEAP_OPTS:--Xmx256m}
perf=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties}
# shellcheck disable=SC2086 # the *_OPTS variables are lists of JVM options
exec java $heap $perf $log4j $KAFKA_OPTS -cp '/opt/kafka/libs/*' "$@"
