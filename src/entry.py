from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        row = await self.env.DB.prepare("SELECT count(*) AS n FROM d1_migrations").first()
        return Response(f"ok {row['n']} {type(row).__name__}")

    async def scheduled(self, controller):
        print("cron", controller.cron)
