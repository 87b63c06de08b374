// Runs once, when the database is first initialised: the services connect as this
// user, which may read and write the platform's database and nothing else.
const database = process.env.MLOPS_MONGODB_DATABASE || "mlops";
db.getSiblingDB("admin").createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: database }],
});
