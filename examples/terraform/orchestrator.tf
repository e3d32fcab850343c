# sidetrace-orchestrator: a Fargate service behind an internal network load
# balancer on TCP 6667. Same task definition as
# examples/ecs/orchestrator-task-definition.json.

resource "aws_lb" "orchestrator" {
  name               = "${var.name}-orch"
  internal           = true
  load_balancer_type = "network"
  subnets            = aws_subnet.private[*].id

  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "orchestrator" {
  name        = "${var.name}-orch"
  port        = 6667
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = aws_vpc.main.id

  # Agents hold long-lived connections: give them time to move on a deploy.
  deregistration_delay = 30

  health_check {
    protocol            = "HTTP"
    port                = "8081"
    path                = "/healthz"
    healthy_threshold   = 2
    unhealthy_threshold = 2
    interval            = 10
  }
}

resource "aws_lb_listener" "orchestrator" {
  load_balancer_arn = aws_lb.orchestrator.arn
  port              = 6667
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.orchestrator.arn
  }
}

resource "aws_ecs_task_definition" "orchestrator" {
  family                   = "${var.name}-orchestrator"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    cpu_architecture        = "X86_64"
    operating_system_family = "LINUX"
  }

  container_definitions = jsonencode([
    {
      name       = "orchestrator"
      image      = var.orchestrator_image
      essential  = true
      entryPoint = ["/opt/sidetrace/bin/sidetrace-orchestrator"]
      command = [
        "--listen", "0.0.0.0:6667",
        "--http", "0.0.0.0:8081",
        "--spool-dir", "/var/lib/sidetrace/spool",
      ]
      portMappings = [
        { name = "agents", containerPort = 6667, protocol = "tcp" },
        { name = "health", containerPort = 8081, protocol = "tcp" },
      ]
      secrets = [
        { name = "SIDETRACE_BACKEND", valueFrom = aws_ssm_parameter.backend_address.arn },
        { name = "SIDETRACE_ACCESS_KEY", valueFrom = aws_ssm_parameter.access_key.arn },
      ]
      ulimits = [
        { name = "nofile", softLimit = 65536, hardLimit = 65536 },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.tasks.name
          "awslogs-region"        = var.region
          "awslogs-stream-prefix" = "orchestrator"
        }
      }
    },
  ])
}

resource "aws_ecs_service" "orchestrator" {
  name            = "orchestrator"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.orchestrator.arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.orchestrator.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.orchestrator.arn
    container_name   = "orchestrator"
    container_port   = 6667
  }

  depends_on = [aws_lb_listener.orchestrator]
}
