# The attacker: an EC2 instance in a private subnet, with no public address
# and no inbound rule from the internet. You reach it through an EC2 Instance
# Connect endpoint:
#   aws ec2-instance-connect ssh --instance-id <attacker_instance_id> --connection-type eice

# Amazon Linux 2023: curl and the EC2 Instance Connect agent preinstalled.
data "aws_ami" "al2023" {
  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["al2023-ami-2023.*-kernel-*-x86_64"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_security_group" "eice" {
  name        = "${var.name}-eice"
  description = "EC2 Instance Connect endpoint"
  vpc_id      = aws_vpc.main.id

  egress {
    description = "SSH to the attacker"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_security_group" "attacker" {
  name        = "${var.name}-attacker"
  description = "attacker instance"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "SSH through the EC2 Instance Connect endpoint"
    from_port       = 22
    to_port         = 22
    protocol        = "tcp"
    security_groups = [aws_security_group.eice.id]
  }

  egress {
    description = "the playground, and package mirrors through the NAT gateway"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ec2_instance_connect_endpoint" "main" {
  subnet_id          = aws_subnet.private[0].id
  security_group_ids = [aws_security_group.eice.id]
  preserve_client_ip = false

  tags = {
    Name = "${var.name}-eice"
  }
}

resource "aws_instance" "attacker" {
  ami                         = data.aws_ami.al2023.id
  instance_type               = var.attacker_instance_type
  subnet_id                   = aws_subnet.private[0].id
  vpc_security_group_ids      = [aws_security_group.attacker.id]
  associate_public_ip_address = false

  metadata_options {
    http_tokens = "required"
  }

  tags = {
    Name = "${var.name}-attacker"
  }
}
