# The security playground, instrumented by sidetrace exactly as
# `sidetrace-instrument` rewrites examples/ecs/playground-task-definition.json:
# the agent sidecar, volumesFrom it, SYS_PTRACE, the wrapped entrypoint,
# SIDETRACE_ORCHESTRATOR and the access key from SSM. Reachable from the
# attacker as playground.<name>.internal:8080 (Cloud Map private DNS).

locals {
  agent_path = "/opt/sidetrace/bin/sidetrace-agent"
}

resource "aws_service_discovery_private_dns_namespace" "main" {
  name = "${var.name}.internal"
  vpc  = aws_vpc.main.id
}

resource "aws_service_discovery_service" "playground" {
  name = "playground"

  dns_config {
    namespace_id = aws_service_discovery_private_dns_namespace.main.id

    dns_records {
      ttl  = 10
      type = "A"
    }
  }
}

resource "aws_ecs_task_definition" "playground" {
  family                   = "${var.name}-playground"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    cpu_architecture        = "X86_64"
    operating_system_family = "LINUX"
  }

  container_definitions = jsonencode([
    {
      name      = "playground"
      image     = var.playground_image
      essential = true
      # The agent is PID 1 and runs the image's own start command under its
      # tracer; "--" separates the agent's flags from the workload.
      entryPoint = [local.agent_path, "--", "python3", "/app/app.py"]
      portMappings = [
        { containerPort = 8080, protocol = "tcp" },
      ]
      environment = [
        { name = "SIDETRACE_ORCHESTRATOR", value = "${aws_lb.orchestrator.dns_name}:6667" },
      ]
      secrets = [
        { name = "SIDETRACE_ACCESS_KEY", valueFrom = aws_ssm_parameter.access_key.arn },
      ]
      volumesFrom = [
        { sourceContainer = "sidetrace-agent", readOnly = true },
      ]
      dependsOn = [
        { containerName = "sidetrace-agent", condition = "START" },
      ]
      linuxParameters = {
        capabilities = {
          add = ["SYS_PTRACE"]
        }
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.tasks.name
          "awslogs-region"        = var.region
          "awslogs-stream-prefix" = "playground"
        }
      }
    },
    {
      # Carries the agent binary in its image's volume, prints the version
      # and exits; the task keeps running (essential = false).
      name              = "sidetrace-agent"
      image             = var.agent_image
      essential         = false
      cpu               = 0
      memoryReservation = 16
      entryPoint        = [local.agent_path, "--version"]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.tasks.name
          "awslogs-region"        = var.region
          "awslogs-stream-prefix" = "sidetrace-agent"
        }
      }
    },
  ])
}

resource "aws_ecs_service" "playground" {
  name            = "playground"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.playground.arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.playground.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.playground.arn
  }

  # The agents connect in the background and buffer until the orchestrator
  # answers, so this ordering is for a tidy first start, not for correctness.
  depends_on = [aws_ecs_service.orchestrator]
}
