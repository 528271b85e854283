/*
 * slo_metrics.h — the scheduler's SLO and estimator families for /metrics:
 * emoe_requests_rejected_total{reason}, emoe_requests_preempted_total,
 * emoe_slo_requests_total{task,slo,outcome}, the step-cost estimates and the
 * per-task output-length quantiles.
 */
#ifndef EMOE_SLO_METRICS_H
#define EMOE_SLO_METRICS_H

#include <stdio.h>
#include "scheduler/sched.h"

void srv_slo_metrics(FILE *f, const sched_stats *st);

#endif
