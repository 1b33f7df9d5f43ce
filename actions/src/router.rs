//! Routes each action to the executor that carries it out: actions on a host to the agent
//! dispatcher, the bot's own actions (DNS over RFC 2136, port probes, verify) to the direct
//! executor (or, in the demo, to the simulation).

use crate::catalog::Target;
use crate::executor::{ActionReport, ActionRequest, Executor};
use async_trait::async_trait;
use std::sync::Arc;

pub struct Router {
    agents: Arc<dyn Executor>,
    bot: Arc<dyn Executor>,
}

impl Router {
    pub fn new(agents: Arc<dyn Executor>, bot: Arc<dyn Executor>) -> Router {
        Router { agents, bot }
    }
}

#[async_trait]
impl Executor for Router {
    async fn execute(&self, request: ActionRequest) -> ActionReport {
        match request.action.target() {
            Target::Agent(_) => self.agents.execute(request).await,
            Target::Bot => self.bot.execute(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{ActionOutcome, IdempotencyKey};
    use crate::{Action, Fqdn};
    use std::time::Duration;

    struct Says(&'static str);

    #[async_trait]
    impl Executor for Says {
        async fn execute(&self, _: ActionRequest) -> ActionReport {
            ActionReport {
                outcome: ActionOutcome::Ok { detail: self.0.into() },
                elapsed_ms: 0,
                replayed: false,
            }
        }
    }

    #[tokio::test]
    async fn agent_actions_go_to_agents_and_bot_actions_to_the_bot() {
        let router = Router::new(Arc::new(Says("agents")), Arc::new(Says("bot")));
        let req = |action| ActionRequest {
            key: IdempotencyKey::new("s", 1, 0, 0, "x", 1),
            action,
            timeout: Duration::from_secs(1),
        };
        let stop = Action::ServicesStop {
            host: Fqdn::parse("edge2a.contoso.com").expect("valid"),
        };
        let probe = Action::PortCheck {
            address: "203.0.113.20".parse().expect("valid"),
            port: 5269,
        };
        assert_eq!(router.execute(req(stop)).await.outcome.text(), "agents");
        assert_eq!(router.execute(req(probe)).await.outcome.text(), "bot");
    }
}
