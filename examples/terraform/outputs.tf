output "orchestrator_address" {
  description = "What agents use as SIDETRACE_ORCHESTRATOR (the internal NLB)."
  value       = "${aws_lb.orchestrator.dns_name}:6667"
}

output "playground_address" {
  description = "The victim, as the attacker reaches it."
  value       = "playground.${aws_service_discovery_private_dns_namespace.main.name}:8080"
}

output "attacker_instance_id" {
  description = "Connect with: aws ec2-instance-connect ssh --instance-id <id> --connection-type eice"
  value       = aws_instance.attacker.id
}

output "cluster_name" {
  value = aws_ecs_cluster.main.name
}
